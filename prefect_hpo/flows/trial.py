"""The generic trial flow: one trial, run by a Prefect worker from a work pool (or, as a runner, many).

It imports the training function by its import path, reads its trial from the
trial store, runs it with reports and scheduler decisions going through the
store, and records how it ended there, so the parent needs nothing back from
the flow run itself. Import paths resolve from the deployment's working folder.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext

from prefect_hpo.errors import StoreError
from prefect_hpo.executors.run_states import trial_run_state
from prefect_hpo.executors.runner_limits import RunnerLimits
from prefect_hpo.flows.runner import run_trials
from prefect_hpo.flows.trial_parts import Heartbeat, trial_spec_from
from prefect_hpo.host_leases import DoesNotFitHost, claim_devices, holding
from prefect_hpo.importing import load_function
from prefect_hpo.records import Outcome, TrialState
from prefect_hpo.resources import apply_placement, build_inventory, parse_request
from prefect_hpo.storage_refs import resolve
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.training import run_training, worker_id


def _cancelled_instead(outcome: Outcome) -> Outcome:
    """A trial that failed while its flow run was being cancelled (a person pressed Cancel: the worker
    signals the process, and the training code may die of it with any error) was cancelled, not failed."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return outcome
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(ctx.flow_run.id).state
    if state is None or not (state.is_cancelling() or state.is_cancelled()):
        return outcome
    reason = f"flow run {ctx.flow_run.id} was cancelled in Prefect; not retried"
    return replace(outcome, state=TrialState.PRUNED, reason=reason)


@flow(name="hpo-trial", log_prints=False)
def hpo_trial(
    storage: str,
    sweep_id: int,
    number: int,
    train: str,
    spec: dict[str, Any],
    runner: dict[str, Any] | None = None,
) -> Any:
    """Run trial `number` of sweep `sweep_id` and record its end in the store; or, given `runner`, be a trial
    runner: take the sweep's trials offered on the runner's queue one after another (`flows.runner`).

    `storage` names the store as the sweep passed it: "env:NAME" or "block:NAME", resolved here on the
    worker (its environment, or the Secret block on its Prefect server), or a URL without credentials.

    Returns the trial's state name; the flow run ends in a state named after the trial's end: a
    trial stopped early ends Completed with the name "Pruned" and the reason, a failed one Failed.
    """
    store = SqlTrialStore(resolve(storage), create=False)  # the sweep made it: missing means deleted
    try:
        if runner is not None:
            return run_trials(store, sweep_id, train, RunnerLimits.from_parameters(runner))
        record = store.trial(sweep_id, number)
        if record.state != TrialState.RUNNING:
            return record.state.value  # a relaunch of an attempt that already ended: nothing to do
        trial_spec = trial_spec_from(spec, record, sweep_id)
        with Heartbeat(store, record.id, float(spec.get("heartbeat_interval", 2.0))):
            try:
                # this host's GPUs, claimed before the training code is imported (CUDA reads its variable once)
                lease = claim_devices(parse_request(spec.get("resources")), build_inventory("auto", None))
            except DoesNotFitHost as exc:  # not retried: it would not fit on this host the next time either
                outcome = Outcome(TrialState.FAIL, error=str(exc), reason=str(exc), worker=worker_id())
            else:
                with holding(lease) as placement:
                    apply_placement(placement.devices, placement.cpu_threads)
                    held = replace(
                        trial_spec,
                        resources=placement.requested,
                        devices=placement.devices,
                        cpu_threads=placement.cpu_threads,
                    )
                    outcome = run_training(load_function(train), held, store)
        if outcome.state == TrialState.FAIL:
            outcome = _cancelled_instead(outcome)
        try:
            final = store.finish_trial(record.id, outcome)
        except StoreError:  # the sweep decided first (time limit, lost heartbeat): its record stands
            return store.trial(sweep_id, number).state.value
        # the flow run ends in the trial's own state; a returned Cancelled state made Prefect's engine
        # raise CancelledRun and log a traceback for every trial the scheduler stopped
        return trial_run_state(final, data=final.state.value)
    finally:
        store.close()
