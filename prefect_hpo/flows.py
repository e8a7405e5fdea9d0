"""The sweep as a Prefect flow: open the store, build the parts, run the loop, return the result."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed

from prefect_hpo.budget import Budget
from prefect_hpo.controller import TrialCallback, TrialCallbackReporter
from prefect_hpo.errors import PrefectHPOError, StoreError, StrategyError
from prefect_hpo.executors.cluster import ClusterExecutor, ClusterTrials
from prefect_hpo.executors.local import LocalExecutor, WorkerKind
from prefect_hpo.executors.workpool import RemoteExecutor, WorkPoolExecutor
from prefect_hpo.importing import import_path
from prefect_hpo.lease import SweepLease
from prefect_hpo.loop import LoopSettings, Reporter, run_loop
from prefect_hpo.objective import Objective, build_objectives
from prefect_hpo.records import Constraint
from prefect_hpo.reporting.artifacts import ArtifactReporter, PlotReporter, Reporters, plots_folder
from prefect_hpo.reporting.checkpoints import TopKCheckpoints
from prefect_hpo.reporting.terminal import TerminalReporter
from prefect_hpo.result import SweepResult, result_from_store
from prefect_hpo.schedulers import FIFOScheduler, Scheduler, build_scheduler
from prefect_hpo.space import SearchSpace
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.store.urls import default_home
from prefect_hpo.strategies import Strategy, build_strategy, strategy_name
from prefect_hpo.strategies.pbt import PBTStrategy
from prefect_hpo.trial import TrainFn, wants_trial


def build_search(
    strategy: Any,
    scheduler: Any,
    space: SearchSpace,
    objectives: tuple[Objective, ...],
    seed: int | None,
    grid_resolution: int,
    stored_trials: int = 0,
) -> tuple[Scheduler, Strategy]:
    """The scheduler, and the strategy, which sees the scheduler's rungs ("bohb" learns from them).

    `stored_trials` is how many trials the sweep already has (a continued sweep). "pbt" (or a dict with
    "type": "pbt" and PBTStrategy's options) is population-based training: a strategy that plans the
    population's generations, under no early stopping."""
    kind = (
        scheduler if isinstance(scheduler, str) else scheduler.get("type") if isinstance(scheduler, Mapping) else None
    )
    if isinstance(kind, str) and kind.lower() == "pbt":
        options = {k: v for k, v in dict(scheduler if isinstance(scheduler, Mapping) else {}).items() if k != "type"}
        if len(objectives) != 1:
            raise StrategyError("pbt ranks its population by one objective; give exactly one")
        try:
            return FIFOScheduler(), PBTStrategy(space, objectives[0], seed=seed, **options)
        except TypeError as exc:
            raise StrategyError(f"scheduler 'pbt': {exc}") from None
    stopper = build_scheduler(scheduler, seed=seed)
    searcher = build_strategy(
        strategy,
        space,
        objectives,
        seed=seed,
        grid_resolution=grid_resolution,
        rung_levels=tuple(getattr(stopper, "levels", ())),
        stored_trials=stored_trials,
    )
    return stopper, searcher


def check_pbt_budget(searcher: Strategy, budget: Budget) -> None:
    """Population-based training needs a trial per member per generation; a smaller max_trials would cut
    a generation short."""
    if isinstance(searcher, PBTStrategy) and budget.max_trials is not None:
        needed = searcher.population * searcher.generations
        if budget.max_trials < needed:
            raise PrefectHPOError(
                f"budget.max_trials={budget.max_trials} is below what pbt needs: population x generations = "
                f"{searcher.population} x {searcher.generations} = {needed}; set max_trials={needed}"
            )


def mark_crashed(flow_run_id: str | None, message: str) -> None:
    """Mark a sweep's earlier flow run Crashed if Prefect still shows it running (its process died)."""
    if flow_run_id is None:
        return
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(flow_run_id))
        except ObjectNotFound:
            return  # it ran against another Prefect server
        if run.state is not None and not run.state.is_final():
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)


@flow(name="hpo-sweep", validate_parameters=False)
def sweep_flow(
    train: TrainFn,
    name: str,
    space: dict[str, Any],
    objective: list[dict[str, str]],
    strategy: Any,
    budget: dict[str, Any],
    storage: str,
    scheduler: Any = None,
    checkpoints: str | None = None,
    seed: int | None = None,
    workers: WorkerKind = "processes",
    grid_resolution: int = 5,
    max_consecutive_duplicates: int = 20,
    show_progress: bool | None = None,
    executor: WorkPoolExecutor | ClusterExecutor | None = None,
    max_retries: int = 2,
    artifact_interval: float | None = 5.0,
    on_trial_complete: TrialCallback | None = None,
    stop_check: Callable[[], str | None] | None = None,
    spec: dict[str, Any] | None = None,
    fork: bool = False,
    constraint: Constraint | None = None,
    max_rejections_in_a_row: int = 20,
    keep_top_k: int | None = None,
) -> SweepResult:
    """Run one sweep to its end. Parameters are plain data (what a deployment form carries)."""
    logger = get_run_logger()
    search_space = SearchSpace.build(space)
    objectives = build_objectives(objective)
    limits = Budget.from_dict(budget)
    store = SqlTrialStore(storage)
    runner: LocalExecutor | RemoteExecutor | ClusterTrials | None = None
    held = contextlib.ExitStack()
    try:
        sweep_id = store.open_sweep(
            name,
            space=search_space.to_dict(),
            objectives=[o.to_dict() for o in objectives],
            strategy=strategy_name(strategy),
            budget=limits.to_dict(),
            spec=spec,
            fork=fork,
        )
        name = str(store.sweep(sweep_id)["name"])  # a fork runs under its own name
        lease = held.enter_context(SweepLease(store, sweep_id))  # a second live parent is refused here
        ctx = FlowRunContext.get()
        flow_run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else None
        if lease.previous_owner is not None and lease.previous_flow_run_id not in (None, flow_run_id):
            logger.warning("sweep %s: taking over from %s, which died while running it", name, lease.previous_owner)
            mark_crashed(
                lease.previous_flow_run_id, f"its process died; sweep {name!r} resumed in flow run {flow_run_id}"
            )
        store.start_sweep(sweep_id, flow_run_id)
        stopper, searcher = build_search(
            strategy, scheduler, search_space, objectives, seed, grid_resolution, store.next_number(sweep_id)
        )
        check_pbt_budget(searcher, limits)
        if isinstance(executor, ClusterExecutor):
            runner = ClusterTrials(train, store, limits.trial_time_limit)
        elif executor is not None:
            runner = RemoteExecutor(executor, store, import_path(train), limits.trial_time_limit)
        else:
            runner = LocalExecutor(
                train, store, workers=workers, slots=limits.max_concurrent, trial_time_limit=limits.trial_time_limit
            )
        reporter: Reporter = TerminalReporter(name, objectives, logger, limits.max_trials, show_bar=show_progress)
        if artifact_interval is not None:
            artifacts = ArtifactReporter(store, sweep_id, name, objectives, min_interval=artifact_interval)
            plots = PlotReporter(store, sweep_id, search_space, plots_folder(storage, name, default_home()))
            held.callback(plots.close)
            reporter = Reporters(reporter, artifacts, plots)
        if on_trial_complete is not None:
            reporter = Reporters(reporter, TrialCallbackReporter(on_trial_complete, objectives))
        if keep_top_k is not None and checkpoints:
            keeper = TopKCheckpoints(checkpoints, name, objectives[0], keep_top_k, store.trials(sweep_id))
            reporter = Reporters(reporter, keeper)
        settings = LoopSettings(
            sweep_id=sweep_id,
            sweep_name=name,
            objectives=objectives,
            budget=limits,
            pass_trial=wants_trial(train) if callable(train) else True,
            scheduler=None if isinstance(stopper, FIFOScheduler) and stopper.max_t is None else stopper,
            checkpoint_root=checkpoints,
            max_retries=max_retries,
            max_consecutive_duplicates=max_consecutive_duplicates,
            stop_check=stop_check,
            constraint=constraint,
            max_rejections_in_a_row=max_rejections_in_a_row,
        )
        try:
            outcome = run_loop(searcher, store, runner, settings, reporter)
        except BaseException as exc:
            with contextlib.suppress(StoreError):  # the store may be what failed (full, unreachable)
                store.finish_sweep(sweep_id, "failed", f"{type(exc).__name__}: {exc}")
            raise
        store.finish_sweep(sweep_id, outcome.status, outcome.reason)
        return result_from_store(store, sweep_id)
    finally:
        if runner is not None:
            runner.close()
        held.close()
        store.close()
