"""`sweep()`: the one call a user makes. Validates everything, then runs the sweep flow."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_hpo.budget import Budget
from prefect_hpo.controller import TrialCallback
from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.executors.cluster import ClusterExecutor
from prefect_hpo.executors.local import WorkerKind
from prefect_hpo.executors.workpool import WorkPoolExecutor
from prefect_hpo.flows import build_search, check_pbt_budget, sweep_flow
from prefect_hpo.importing import import_path
from prefect_hpo.objective import Objective, build_objectives
from prefect_hpo.records import Constraint
from prefect_hpo.result import SweepResult
from prefect_hpo.schedulers import Scheduler
from prefect_hpo.space import SearchSpace
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.store.urls import default_home, resolve_storage
from prefect_hpo.strategies import Strategy
from prefect_hpo.trial import TrainFn, wants_trial

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._\-]{0,199}$")


def _default_name(train: TrainFn) -> str:
    """The training function's name, reduced to the characters a sweep name may hold."""
    raw = getattr(train, "__name__", "") or ""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-._") or "sweep"


def sweep(
    train: TrainFn,
    space: SearchSpace | Mapping[str, Any] | str,
    objective: Objective | str | Mapping[str, Any] | Sequence[Any] = "loss",
    strategy: str | optuna.samplers.BaseSampler | Strategy = "tpe",
    budget: Budget | None = None,
    storage: str | None = None,
    name: str | None = None,
    *,
    seed: int | None = None,
    scheduler: str | Mapping[str, Any] | Scheduler | None = None,
    checkpoints: str | None = None,
    workers: WorkerKind = "processes",
    grid_resolution: int = 5,
    max_consecutive_duplicates: int = 20,
    show_progress: bool | None = None,
    executor: WorkPoolExecutor | ClusterExecutor | None = None,
    max_retries: int = 2,
    artifact_interval: float | None = 5.0,
    on_trial_complete: TrialCallback | None = None,
    stop_check: Callable[[], str | None] | None = None,
    validate_only: bool = False,
    spec: Mapping[str, Any] | None = None,
    fork: bool = False,
    constraint: Constraint | None = None,
    max_rejections_in_a_row: int = 20,
    keep_top_k: int | None = None,
) -> SweepResult:
    """Search `space` for the configuration that optimises `objective`, as a Prefect flow.

    Args:
        train: `train(config, trial)` or `train(config)`; returns a number or a dict of numbers.
        space: parameter name -> Float/Int/Categorical/Fixed, their dict form, or YAML text.
        objective: `Objective("val_loss", "min")`, "val_loss:min", or a list of them (Pareto front).
        strategy: "grid", "random", "tpe", "gp", "cmaes", "qmc", "nsga2", "rl" (REINFORCE), "bohb"
            (TPE per budget; needs "asha" or "hyperband"), an Optuna sampler, or an object with
            `ask()` / `tell(trial)`.
        budget: limits; default `Budget()` (20 trials, one at a time).
        storage: SQLAlchemy URL or a file path for SQLite; default a SQLite file in ~/.prefect_hpo.
        name: the sweep's name in the store and the flow run's name; a sweep of the same
            name and space continues where it stopped. Default: the training function's name.
        scheduler: early stopping: "fifo" (default: none), "median", "asha", "hyperband", a dict
            such as {"type": "asha", "max_t": 27, "grace_period": 1, "reduction_factor": 3},
            or a scheduler object. {"type": "pbt", "population": 8, "interval": 5, "generations": 10}
            is population-based training.
        checkpoints: folder or fsspec URL for trial checkpoints (promotion-form schedulers);
            default: ~/.prefect_hpo/checkpoints.
        seed: makes sampling reproducible (exactly so with max_concurrent=1).
        workers: "processes" (default; CPU-bound trials run in parallel) or "threads".
        grid_resolution: points per continuous range for the grid strategy.
        max_consecutive_duplicates: proposals in a row that repeat an evaluated configuration
            before the space counts as exhausted.
        show_progress: draw a progress bar (default: when stderr is a terminal).
        executor: `WorkPoolExecutor(pool=..., queues=...)` runs each trial as a flow run of the
            trial deployment on a Prefect work pool (`train` must then be importable by the workers);
            `ClusterExecutor.dask(...)` / `.ray(...)` runs each trial as a task run on a Dask or Ray
            cluster through Prefect's task runners. Default: this machine's processes or threads.
        max_retries: times a trial whose worker died (FAIL_RECOVERABLE) runs again, as a new
            attempt, before it counts as FAIL.
        on_trial_complete: called as each trial ends, in the sweep's thread, with
            (trial number, value, step, config, best trial number so far).
        stop_check: asked between events; a reason to stop the sweep now, or None (what
            `start_sweep`'s controller passes).
        validate_only: check every argument, then return None without running anything.
        spec: the SweepSpec (as a dict) this sweep runs from, kept in the store for `prefect-hpo resume`.
        fork: when `name` exists with another space or objective, run as `<name>-fork-<k>` (continuing
            the fork with this space and objective if there is one) instead of refusing.
        constraint: `constraint(config)` is asked before each new configuration runs; False (or a
            string: the reason) rejects it: it is stored PRUNED_INVALID with the reason, costs no
            budget, and the strategy learns it failed. True (or None) lets it run.
        max_rejections_in_a_row: rejections in a row after which the sweep ends ("the constraint
            rejected N configurations in a row"), as a sampler that cannot find a valid point must.
        keep_top_k: keep the checkpoint folders of the k best trials only, removing the others' as
            trials fall out of the top k (ClearML's save_top_k_tasks_only); the store keeps every row.
        artifact_interval: least seconds between two updates of the sweep's Prefect artifacts
            (summary table, best configuration, progress, budget); a last update is always made
            when the sweep ends. None: no artifacts.

    Raises:
        PrefectHPOError (a subclass naming the field) for bad input, before any trial runs;
        TooManyFailedTrials when more trials fail than `budget.max_failed_trials`.
    """
    wants_trial(train)
    search_space = SearchSpace.build(space)
    objectives = build_objectives(objective)
    limits = budget if budget is not None else Budget()
    if not isinstance(limits, Budget):
        raise PrefectHPOError(f"budget must be a Budget(...), got {limits!r}")
    sweep_name = name if name is not None else _default_name(train)
    if not isinstance(sweep_name, str) or not _NAME.match(sweep_name):
        raise PrefectHPOError(
            f"sweep name {sweep_name!r} is not usable; use letters, digits, spaces, '.', '_' or '-' "
            "(at most 200 characters, starting with a letter or digit)"
        )
    _, searcher = build_search(strategy, scheduler, search_space, objectives, seed, grid_resolution)
    check_pbt_budget(searcher, limits)
    if isinstance(executor, WorkPoolExecutor):
        import_path(train)
    elif executor is not None and not isinstance(executor, ClusterExecutor):
        raise PrefectHPOError(
            f"executor must be a WorkPoolExecutor, a ClusterExecutor or None (this machine), got {executor!r}"
        )
    if artifact_interval is not None and (
        isinstance(artifact_interval, bool) or not isinstance(artifact_interval, int | float) or artifact_interval < 0
    ):
        raise PrefectHPOError(
            f"artifact_interval must be a number of seconds >= 0 (or None for no artifacts), got {artifact_interval!r}"
        )
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise PrefectHPOError(f"max_retries must be a non-negative integer, got {max_retries!r}")
    if keep_top_k is not None and (isinstance(keep_top_k, bool) or not isinstance(keep_top_k, int) or keep_top_k < 1):
        raise PrefectHPOError(
            f"keep_top_k must be a positive integer (or None to keep every checkpoint), got {keep_top_k!r}"
        )
    if constraint is not None and not callable(constraint):
        raise PrefectHPOError(f"constraint must be a callable taking a configuration, got {constraint!r}")
    if (
        isinstance(max_rejections_in_a_row, bool)
        or not isinstance(max_rejections_in_a_row, int)
        or (max_rejections_in_a_row < 1)
    ):
        raise PrefectHPOError(f"max_rejections_in_a_row must be a positive integer, got {max_rejections_in_a_row!r}")
    if on_trial_complete is not None and not callable(on_trial_complete):
        raise PrefectHPOError(f"on_trial_complete must be a callable, got {on_trial_complete!r}")
    url = resolve_storage(storage)
    SqlTrialStore(url).close()  # an unreachable or invalid store fails here, before Prefect starts
    if validate_only:
        return None  # type: ignore[return-value]

    task_runner = (
        executor.task_runner
        if isinstance(executor, ClusterExecutor)
        else ThreadPoolTaskRunner(max_workers=limits.max_concurrent)
    )
    run = sweep_flow.with_options(flow_run_name=sweep_name, task_runner=task_runner)  # type: ignore[arg-type]
    return run(
        train=train,
        name=sweep_name,
        space=search_space.to_dict(),
        objective=[o.to_dict() for o in objectives],
        strategy=strategy,
        budget=limits.to_dict(),
        scheduler=scheduler,
        checkpoints=checkpoints or str(default_home() / "checkpoints"),
        storage=url,
        seed=seed,
        workers=workers,
        grid_resolution=grid_resolution,
        max_consecutive_duplicates=max_consecutive_duplicates,
        show_progress=show_progress,
        executor=executor,
        max_retries=max_retries,
        artifact_interval=artifact_interval,
        on_trial_complete=on_trial_complete,
        stop_check=stop_check,
        spec=dict(spec) if spec is not None else None,
        fork=bool(fork),
        constraint=constraint,
        max_rejections_in_a_row=max_rejections_in_a_row,
        keep_top_k=keep_top_k,
    )
