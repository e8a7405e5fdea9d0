"""`sweep()`: the one call a user makes. It makes the sweep's `SweepOptions` (each field checked), checks them
against the parts and Prefect (`validate_sweep`), then runs the sweep flow with them (`run_sweep`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from prefect.settings import get_current_settings
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import SecretStr

from prefect_hpo.arguments import check_parameter_size
from prefect_hpo.budget import Budget
from prefect_hpo.errors import PrefectHPOError, ServerStartError
from prefect_hpo.executors.main_script import skip_top_level_sweep
from prefect_hpo.executors.settings import ClusterExecutor, WorkerKind, WorkPoolExecutor
from prefect_hpo.flow_heartbeats import sent_by_the_sweep
from prefect_hpo.head_start import HeadStart
from prefect_hpo.importing import import_path
from prefect_hpo.interrupts import install_quiet_hook, quiet, sweep_interrupted
from prefect_hpo.objective import Objective
from prefect_hpo.options import SweepOptions
from prefect_hpo.records import Constraint
from prefect_hpo.reporting.callback import TrialCallback
from prefect_hpo.resources import ResourcesOption
from prefect_hpo.result import SweepResult
from prefect_hpo.schedulers import Scheduler
from prefect_hpo.space import SearchSpace
from prefect_hpo.storage_refs import refuse_credentials_for_workers, resolve
from prefect_hpo.strategies import Strategy
from prefect_hpo.sweep_flow import sweep_flow
from prefect_hpo.temporary_server import (
    shared_with_cluster_workers,
    start_temporary_server,
    temporary_server_settings,
    without_heartbeats,
)
from prefect_hpo.trial import TrainFn


def sweep(
    train: TrainFn,
    space: SearchSpace | Mapping[str, Any] | str,
    objective: Objective | str | Mapping[str, Any] | Sequence[Any] = "loss",
    strategy: str | Mapping[str, Any] | optuna.samplers.BaseSampler | Strategy = "tpe",
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
    resources: ResourcesOption | None = None,
    devices: Sequence[str | int] | str | None = "auto",
    capacity: Mapping[str, float] | None = None,
) -> SweepResult:
    """Search `space` for the configuration that optimises `objective`, as a Prefect flow.

    Args:
        train: `train(config, trial)` or `train(config)`; returns a number or a dict of numbers.
        space: parameter name -> Float/Int/Categorical/Fixed, their dict form, or YAML text.
        objective: `Objective("val_loss", "min")`, "val_loss:min", or a list of them (Pareto front).
        strategy: "grid", "random", "tpe", "gp", "cmaes", "qmc", "nsga2", "rl" (REINFORCE), "bohb"
            (TPE per budget; needs "asha" or "hyperband"), "pbt" (population-based training; with its
            options as a dict: {"type": "pbt", "population": 8, "interval": 5, "generations": 10}),
            an Optuna sampler, or an object with `ask()` / `tell(trial)`.
        budget: limits; default `Budget()` (20 trials, one at a time).
        storage: SQLAlchemy URL or a file path for SQLite; default a SQLite file in ~/.prefect_hpo.
            "env:NAME" (an environment variable) or "block:NAME" (a Prefect Secret block) names the URL
            by reference, resolved where the store is opened; only the reference reaches Prefect. A URL
            with a password given directly stays in this process (Prefect sees it masked); a work-pool
            sweep refuses it, since its workers could only learn it through Prefect.
        name: the sweep's name in the store and the flow run's name; a sweep of the same
            name and space continues where it stopped. Default: the training function's name.
        scheduler: early stopping: "fifo" (default: none), "median", "asha", "hyperband", a dict
            such as {"type": "asha", "max_t": 27, "grace_period": 1, "reduction_factor": 3},
            or a scheduler object. ("pbt" here is the deprecated spelling of strategy="pbt".)
        checkpoints: folder or fsspec URL for trial checkpoints (promotion-form schedulers, PBT);
            default: ~/.prefect_hpo/checkpoints. Each sweep has its own folder in it,
            `<cleaned name>-<sweep uid>` (`result.checkpoint_path(number)` gives a trial's).
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
            attempt, before it counts as FAIL. Attempts cut off by a Ctrl-C or by the death of the
            sweep's own process are not failures: they run again without counting.
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
            Only the sweep's own folder is pruned, never a folder from before per-sweep folders.
        artifact_interval: least seconds between two updates of the sweep's Prefect artifacts
            (summary table, best configuration, progress, budget); a last update is always made
            when the sweep ends. None: no artifacts.
        resources: what each trial needs: {"gpu": 1, "cpu": 2}, a share of one GPU ({"gpu": 0.25}: four trials
            on a device), whole GPUs ({"gpu": 2}), custom resources by name (declared in `capacity`), or a
            function of the configuration that returns such a mapping. On this machine a trial starts only
            when what it asks for is free; its process gets CUDA_VISIBLE_DEVICES of its GPUs and its CPU share
            as OMP/MKL/OpenBLAS thread counts (`trial.devices`, `trial.resources`). Default: no GPU, and an even
            share of the cores (cores / max_concurrent threads each). On a work pool, a trial asking for a GPU
            goes to the GPU queue.
        devices: this machine's GPUs: "auto" (default: CUDA_VISIBLE_DEVICES, else NVML, else nvidia-smi),
            None (none), or their ids ([0, 1]).
        capacity: this machine's cores ({"cpu": 8}) and custom resources ({"license": 2}), where they differ
            from what is found (the cores this process may use; no custom resource).

    Raises:
        PrefectHPOError (a subclass naming the field) for bad input, before any trial runs;
        TooManyFailedTrials when more trials fail than `budget.max_failed_trials`; its subclass
        TrialsFailAlike, quoting the error, when the first `budget.fail_fast` trials fail alike.
    """
    skip_top_level_sweep()  # the fork server loading this script for the workers runs no sweep of its own
    options = SweepOptions.build(
        train,
        space,
        objective,
        budget,
        name,
        storage,
        spec,
        checkpoints,
        strategy=strategy,
        seed=seed,
        scheduler=scheduler,
        workers=workers,
        grid_resolution=grid_resolution,
        max_consecutive_duplicates=max_consecutive_duplicates,
        show_progress=show_progress,
        executor=executor,
        max_retries=max_retries,
        artifact_interval=artifact_interval,
        on_trial_complete=on_trial_complete,
        stop_check=stop_check,
        fork=bool(fork),
        constraint=constraint,
        max_rejections_in_a_row=max_rejections_in_a_row,
        keep_top_k=keep_top_k,
        resources=resources,
        devices=devices,
        capacity=capacity,
    )
    url = validate_sweep(options, storage)
    if validate_only:  # the first spelling of validate_sweep(), kept for the calls that use it
        return None  # type: ignore[return-value]
    return run_sweep(options, url)


def validate_sweep(options: SweepOptions, storage: str | None = None) -> str:
    """Check `options` against everything a sweep meets before its first trial: the strategy and the scheduler
    build, a work pool can import `train` and learn the store, the store opens and takes writes, and Prefect's
    server takes the flow run's parameters. Runs nothing; returns the store's URL.

    `storage`: the store as the caller named it, where it differs from `options.storage` (a URL whose
    password the options hold masked); default `options.storage`.

    Raises:
        PrefectHPOError (a subclass naming the field) for the first thing that would fail.
    """
    executor = options.executor
    if isinstance(executor, WorkPoolExecutor):
        import_path(options.train)
        refuse_credentials_for_workers(storage)
    elif executor is not None and not isinstance(executor, ClusterExecutor):
        raise PrefectHPOError(
            f"executor must be a WorkPoolExecutor, a ClusterExecutor or None (this machine), got {executor!r}"
        )
    url = resolve(storage if storage is not None else options.storage)
    parameters = {"options": options, "storage_url": SecretStr(url)}
    check_parameter_size(sweep_flow, parameters, get_current_settings().server.api.max_parameter_size)
    options.check(url)
    return url


def run_sweep(options: SweepOptions, url: str) -> SweepResult:
    """Run the sweep `options` describe (checked by `validate_sweep`, which gave `url`) as a Prefect flow."""
    executor, limits = options.executor, options.budget
    train, sweep_name = options.train, options.name
    task_runner = (
        executor.task_runner
        if isinstance(executor, ClusterExecutor)
        else ThreadPoolTaskRunner(max_workers=limits.max_concurrent)
    )
    # The workers and the plot helper start first, while Prefect starts its server and creates the flow run.
    head_start = HeadStart(
        train,
        url,
        limits.max_concurrent,
        processes=executor is None and options.workers == "processes",
        plots=options.artifact_interval is not None,
        fresh=options.fresh_processes(),
    )
    # a server this starts: no telemetry errors, time for a first start, a Ctrl-C does not stop it
    with head_start, temporary_server_settings():
        try:
            temporary = start_temporary_server()
        except ServerStartError as exc:  # names the setting to raise: its message, not a traceback
            install_quiet_hook()
            raise quiet(exc) from None
        run = sweep_flow.with_options(flow_run_name=sweep_name, task_runner=task_runner)  # type: ignore[arg-type]
        with contextlib.ExitStack() as settings:
            if temporary:
                settings.enter_context(without_heartbeats())
                if isinstance(executor, ClusterExecutor) and executor.on_this_machine:
                    settings.enter_context(shared_with_cluster_workers())
            settings.enter_context(sent_by_the_sweep())  # its end does not wait for Prefect's heartbeat thread
            try:
                state = run(options, SecretStr(url), return_state=True)
            except Exception as exc:
                _raise_if_cluster_start(exc, executor)
                raise
    if state.is_cancelled():  # Ctrl-C or SIGTERM: what ran is stored, and the same call continues it
        install_quiet_hook()
        raise sweep_interrupted(state.message or "the sweep was interrupted")
    try:
        result = state.result()
    except PrefectHPOError as exc:  # an error that names its fix: left uncaught, its message, not a traceback
        install_quiet_hook()
        raise quiet(exc)  # noqa: B904 - the same exception, raised again
    except Exception as exc:
        _raise_if_cluster_start(exc, executor)
        raise
    assert isinstance(result, SweepResult)
    return result


def _raise_if_cluster_start(error: Exception, executor: object) -> None:
    """Raise the clear word instead of `error` when it is a cluster failing to start."""
    explained = executor.explain_start_failure(error) if isinstance(executor, ClusterExecutor) else None
    if explained is not None:
        install_quiet_hook()
        raise quiet(explained) from None
