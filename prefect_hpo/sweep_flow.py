"""The sweep as a Prefect flow: open the store, build the parts, run the loop, return the result.

This is the flow `sweep()` runs in the caller's process. The flows that workers run from deployments (a trial
on a work pool, a sweep from a `SweepSpec`) are in `prefect_hpo.flows`."""

from __future__ import annotations

import contextlib
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Crashed, Failed
from pydantic import SecretStr

from prefect_hpo.checkpoint_layout import CheckpointLayout
from prefect_hpo.errors import PrefectHPOError, StoreError
from prefect_hpo.executors.cluster import ClusterTrials
from prefect_hpo.executors.local import LocalTrials
from prefect_hpo.executors.run_states import trial_ends_as_warnings
from prefect_hpo.executors.runner_pool import RunnerPoolTrials
from prefect_hpo.executors.settings import ClusterExecutor, WorkPoolExecutor
from prefect_hpo.executors.workpool import WorkPoolTrials
from prefect_hpo.flow_heartbeats import FlowRunHeartbeats
from prefect_hpo.head_start import current_head_start
from prefect_hpo.importing import import_path
from prefect_hpo.interrupts import Interrupts
from prefect_hpo.lease import SweepLease
from prefect_hpo.loop import LoopSettings, run_loop
from prefect_hpo.options import SweepOptions
from prefect_hpo.overview import store_line
from prefect_hpo.records import TrialState
from prefect_hpo.reporting.artifacts import ArtifactReporter
from prefect_hpo.reporting.base import Reporter, Reporters
from prefect_hpo.reporting.callback import TrialCallbackReporter
from prefect_hpo.reporting.checkpoints import TopKCheckpoints
from prefect_hpo.reporting.plots_artifact import PlotDrawer, plots_folder
from prefect_hpo.reporting.terminal import TerminalReporter
from prefect_hpo.result import SweepResult, result_from_store
from prefect_hpo.schedulers import FIFOScheduler
from prefect_hpo.storage_refs import resolve, shown
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.store.urls import default_home
from prefect_hpo.strategies import strategy_name
from prefect_hpo.temporary_server import stop_temporary_server
from prefect_hpo.trial import wants_trial


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


def _continue_line(store: SqlTrialStore, sweep_id: int, name: str, reason: str) -> str:
    """The one line an interrupted sweep leaves: what is kept, and how to go on."""
    trials = store.trials(sweep_id)
    again = sum(t.state in (TrialState.INTERRUPTED, TrialState.FAIL_RECOVERABLE) for t in trials)
    return (
        f"sweep {name!r} {reason}: run the same call again to continue "
        f"({len(trials)} trials kept, {again} of them to run again)"
    )


@flow(name="hpo-sweep", validate_parameters=False)
def sweep_flow(options: SweepOptions, storage_url: SecretStr | None = None) -> SweepResult | State[Any]:
    """Run one sweep to its end, as `options` (made and checked by `sweep()`) say.

    Prefect stores every parameter: the options as plain data (`SweepOptions.parameters()`: their `storage`
    is a reference such as "env:HPO_DB_URL", or a URL whose credentials are masked), and `storage_url`, the
    URL itself, as "**********". Without `storage_url`, the options' `storage` is resolved here.

    Ctrl-C or SIGTERM (Prefect's cancel sends one) stops it early: the running trials are recorded
    INTERRUPTED, and the flow run ends Cancelled with a message that says how to continue.
    """
    logger = get_run_logger()
    head = current_head_start()  # the processes sweep() started for this flow, if it did
    train, objectives, limits, executor = options.train, options.objectives, options.budget, options.executor
    url = storage_url.get_secret_value() if storage_url is not None else resolve(options.storage)
    store = SqlTrialStore(url, create=False)  # sweep() opened it first: a missing file was deleted since
    runner: LocalTrials | WorkPoolTrials | RunnerPoolTrials | ClusterTrials | None = None
    held = contextlib.ExitStack()
    interrupts = held.enter_context(Interrupts())
    held.enter_context(trial_ends_as_warnings())
    held.enter_context(FlowRunHeartbeats())  # sweep() took them over from Prefect's engine (flow_heartbeats)
    interrupts.add_hard_stop(stop_temporary_server)
    try:
        sweep_id = store.open_sweep(
            options.name,
            space=options.space.to_dict(),
            objectives=[o.to_dict() for o in objectives],
            strategy=strategy_name(options.strategy),
            budget=limits.to_dict(),
            spec=options.spec,
            fork=options.fork,
        )
        row = store.sweep(sweep_id)
        name = str(row["name"])  # a fork runs under its own name
        checkpoints = options.checkpoints
        layout = CheckpointLayout.of_sweep(checkpoints, row) if checkpoints else None
        logger.log(*store_line(store, sweep_id))  # where the trials go: a typo in a path shows at once
        lease = held.enter_context(SweepLease(store, sweep_id))  # a second live parent is refused here
        ctx = FlowRunContext.get()
        flow_run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else None
        if lease.previous_owner is not None and lease.previous_flow_run_id not in (None, flow_run_id):
            logger.warning("sweep %s: taking over from %s, which died while running it", name, lease.previous_owner)
            mark_crashed(
                lease.previous_flow_run_id, f"its process died; sweep {name!r} resumed in flow run {flow_run_id}"
            )
        store.start_sweep(sweep_id, flow_run_id)
        stopper, searcher = options.search(store.next_number(sweep_id))
        # this machine's GPUs and cores, found once (nvidia-smi takes a moment); None where trials run elsewhere,
        # placed on the hosts that take them
        inventory = options.inventory() if executor is None else None
        if isinstance(executor, ClusterExecutor):
            runner = ClusterTrials(train, store, limits.trial_time_limit)
        elif isinstance(executor, WorkPoolExecutor):
            storage = shown(options.storage, url)  # what the workers are told: a reference, or a plain URL
            pool_trials = RunnerPoolTrials if executor.runners else WorkPoolTrials
            runner = pool_trials(executor, store, import_path(train), storage, limits.trial_time_limit)
        else:
            fresh = options.fresh_processes(inventory)
            runner = LocalTrials(
                train,
                store,
                workers=options.workers,
                slots=limits.max_concurrent,
                trial_time_limit=limits.trial_time_limit,
                runner=head.take_runner(train, url, limits.max_concurrent, fresh)
                if head and options.workers == "processes"
                else None,
                fresh=fresh,
            )
        plots: PlotDrawer | None = None
        reporter: Reporter = TerminalReporter(
            name,
            objectives,
            logger,
            limits.max_trials,
            show_bar=options.show_progress,
            stored=store.trials(sweep_id),
            running_adopted=isinstance(runner, WorkPoolTrials),
        )
        if options.artifact_interval is not None:
            local_gpus = inventory.devices if inventory is not None else ()
            artifacts = ArtifactReporter(
                store, sweep_id, name, objectives, min_interval=options.artifact_interval, devices=local_gpus
            )
            folder = plots_folder(url, name, default_home())
            drawer = head.take_drawer() if head else None
            plots = held.enter_context(PlotDrawer(options.space, folder, drawer=drawer))
            reporter = Reporters(reporter, artifacts)
        if options.on_trial_complete is not None:
            reporter = Reporters(reporter, TrialCallbackReporter(options.on_trial_complete, objectives))
        if options.keep_top_k is not None and layout is not None:
            keeper = TopKCheckpoints(layout, objectives[0], options.keep_top_k, store.trials(sweep_id))
            reporter = Reporters(reporter, keeper)
        settings = LoopSettings(
            options,
            sweep_id=sweep_id,
            sweep_name=name,
            pass_trial=wants_trial(train) if callable(train) else True,
            scheduler=None if isinstance(stopper, FIFOScheduler) and stopper.max_t is None else stopper,
            checkpoints=layout,
            interrupted=interrupts.signal_name,
            inventory=inventory,
        )
        try:
            outcome = run_loop(searcher, store, runner, settings, reporter)
        except BaseException as exc:
            with contextlib.suppress(StoreError):  # the store may be what failed (full, unreachable)
                store.finish_sweep(sweep_id, "failed", f"{type(exc).__name__}: {exc}")
            raise
        store.finish_sweep(sweep_id, outcome.status, outcome.reason)
        if outcome.status == "interrupted":
            return Cancelled(message=_continue_line(store, sweep_id, name, outcome.reason))
        result = result_from_store(store, sweep_id, checkpoint_root=checkpoints)
        if plots is not None:
            plots.draw(result)
        return result
    except PrefectHPOError as exc:
        # Our own errors name the fix: the flow run ends Failed with that message, and sweep() raises the
        # error itself, without Prefect's "Encountered exception" traceback in between.
        return Failed(message=str(exc), data=exc)
    finally:
        if runner is not None:
            runner.close()
        held.close()
        store.close()
