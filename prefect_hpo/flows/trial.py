"""The generic trial flow: one trial, run by a Prefect worker from a work pool.

It imports the training function by its import path, reads its trial from the
trial store, runs it with reports and scheduler decisions going through the
store, and records how it ended there, so the parent needs nothing back from
the flow run itself. Import paths resolve from the deployment's working folder.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext

from prefect_hpo.checkpoint_layout import legacy_folder
from prefect_hpo.errors import StoreError
from prefect_hpo.executors.run_states import trial_run_state
from prefect_hpo.host_leases import DoesNotFitHost, claim_devices, holding
from prefect_hpo.importing import load_function
from prefect_hpo.objective import build_objectives
from prefect_hpo.records import Outcome, TrialState
from prefect_hpo.resources import apply_placement, build_inventory, parse_request
from prefect_hpo.schedulers import scheduler_from_dict
from prefect_hpo.storage_refs import resolve
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.training import run_training, worker_id
from prefect_hpo.trial import TrialSpec


class Heartbeat:
    """Writes the trial's sign of life to the store every `interval` seconds, from a daemon thread."""

    def __init__(self, store: SqlTrialStore, trial_id: int, interval: float) -> None:
        self._store, self._trial_id, self._interval = store, trial_id, interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="hpo-heartbeat")

    def __enter__(self) -> Heartbeat:
        self._store.beat(self._trial_id)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            self._store.beat(self._trial_id)

    def __exit__(self, *_: object) -> None:
        self._stopped.set()
        self._thread.join(timeout=self._interval + 5)


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


def _checkpoint_path(spec: dict[str, Any], number: int) -> str | None:
    """The trial's checkpoint folder as the parent resolved it; a flow run launched by a release from before
    per-sweep folders names the root instead, and its trials use the old folder (`<root>/<cleaned name>`)."""
    if "checkpoint_path" in spec or not spec.get("checkpoint_root"):
        return spec.get("checkpoint_path")
    return f"{str(spec['checkpoint_root']).rstrip('/')}/{legacy_folder(spec['sweep_name'])}/trial-{number}"


@flow(name="hpo-trial", log_prints=False)
def hpo_trial(storage: str, sweep_id: int, number: int, train: str, spec: dict[str, Any]) -> Any:
    """Run trial `number` of sweep `sweep_id` and record its end in the store.

    `storage` names the store as the sweep passed it: "env:NAME" or "block:NAME", resolved here on the
    worker (its environment, or the Secret block on its Prefect server), or a URL without credentials.

    Returns the trial's state name; the flow run ends in a state named after the trial's end: a
    trial stopped early ends Completed with the name "Pruned" and the reason, a failed one Failed.
    """
    store = SqlTrialStore(resolve(storage), create=False)  # the sweep made it: missing means deleted
    try:
        record = store.trial(sweep_id, number)
        if record.state != TrialState.RUNNING:
            return record.state.value  # a relaunch of an attempt that already ended: nothing to do
        trial_spec = TrialSpec(
            trial_id=record.id,
            number=number,
            sweep_name=spec["sweep_name"],
            config=record.config,
            objectives=build_objectives(spec["objectives"]),
            max_steps=spec.get("max_steps"),
            pass_trial=spec.get("pass_trial", True),
            sweep_id=sweep_id,
            bracket=record.bracket,
            scheduler=scheduler_from_dict(spec.get("scheduler")),
            min_steps=spec.get("min_steps"),
            attempt=record.attempt,
            # the parent's word (a PBT member starts from its parent's step); else a resumed attempt's last step
            resume_step=spec.get("resume_step", record.last_step if record.attempt > 1 else None),
            checkpoint_path=_checkpoint_path(spec, number),
            max_total_steps=spec.get("max_total_steps"),
        )
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
