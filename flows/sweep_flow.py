"""The sweep as a deployment: a flow whose parameters are plain data, so a worker can run it.

`sweep()` takes the training function itself; a deployment cannot carry a
function, so this flow takes its import path (`package.module:function`),
imports it on the worker, and runs the sweep as a subflow. With `pool` set, the
sweep's trials run as flow runs of the trial deployment on that work pool;
without it, in this flow run's own processes.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from prefect_hpo import Budget, sweep
from prefect_hpo.executors.workpool import WorkPoolExecutor
from prefect_hpo.importing import load_function


@flow(name="hpo-run-sweep")
def hpo_run_sweep(
    train: str,
    space: dict[str, Any],
    objective: str | list[dict[str, str]] = "loss",
    strategy: str = "tpe",
    budget: dict[str, Any] | None = None,
    storage: str | None = None,
    name: str | None = None,
    scheduler: str | dict[str, Any] | None = None,
    seed: int | None = None,
    pool: str | None = None,
    gpu_when: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one sweep from plain parameters; returns its summary (best configuration and value, trials, stop reason).

    Args:
        train: import path of the training function, e.g. "flows.digits_mlp:train".
        space, objective, strategy, budget, storage, name, scheduler, seed: as for `sweep()`, in plain form.
        pool: run trials on this work pool (through the `hpo-trial` deployment) instead of locally.
        gpu_when: with `pool`, the configuration values that send a trial to the `gpu` queue,
            e.g. {"model": "large"}; every other trial goes to `cpu`.
    """
    executor = None
    if pool is not None:
        wants = dict(gpu_when or {})
        executor = WorkPoolExecutor(
            pool=pool,
            resources=lambda config: {"gpu": 1} if wants and all(config.get(k) == v for k, v in wants.items()) else {},
        )
    result = sweep(
        load_function(train),
        space,
        objective,
        strategy,
        Budget.from_dict(budget or {}),
        storage,
        name,
        scheduler=scheduler,
        seed=seed,
        executor=executor,
    )
    return {
        "name": result.name,
        "best_config": result.best_config,
        "best_value": result.best_value,
        "trials": len(result.records),
        "stop_reason": result.stop_reason,
    }
