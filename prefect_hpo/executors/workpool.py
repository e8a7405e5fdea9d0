"""Trials as flow runs on a Prefect work pool: Prefect's server, pools and workers are the distributed engine.

The parent submits each trial as a Prefect task that starts one flow run of the
`hpo-trial` deployment (`run_deployment`, a child of that task, so the UI shows
sweep -> trial task -> trial flow run) on the queue its resources ask for. The
trial flow records its own end in the trial store; the task watches the flow
run's state and, if the run ended without recording anything (crashed, killed,
cancelled), records that itself. Launches carry an idempotency key per attempt (sweep uid, trial, attempt),
so a relaunch never starts the same attempt twice.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.states import Cancelling, Crashed

from prefect_hpo.errors import StoreError
from prefect_hpo.executors.base import ClosedOnExit, EndedTrials, TrialHandle
from prefect_hpo.executors.jobs import trial_task
from prefect_hpo.executors.settings import WorkPoolExecutor as WorkPoolExecutor
from prefect_hpo.records import Outcome, TrialRecord, TrialState, is_interrupt_request
from prefect_hpo.schedulers import scheduler_to_dict
from prefect_hpo.storage_refs import refuse_credentials_for_workers
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.trial import TrialSpec


class WorkPoolJob:
    """One trial's flow run (a `TrialJob`), shared by the task that watches it and the loop that may cancel it."""

    def __init__(
        self,
        spec: TrialSpec,
        parameters: dict[str, Any],
        queue_name: str,
        store: SqlTrialStore,
        settings: WorkPoolExecutor,
        time_limit: float | None,
        sweep_uid: str,
    ) -> None:
        self._time_limit = time_limit
        self.sweep_uid = sweep_uid
        self.spec, self.parameters, self.queue_name = spec, parameters, queue_name
        self._store, self._settings = store, settings
        self._cancel = threading.Event()
        self.cancel_reason: str | None = None
        self.flow_run_id: str | None = None
        self.final: TrialRecord | None = None
        self.error: BaseException | None = None

    def execute(self, task_run_id: str | None = None) -> TrialRecord:
        try:
            if task_run_id is not None:
                self._store.set_task_run(self.spec.trial_id, task_run_id)
            self.final = self._run()
            return self.final
        except BaseException as exc:
            self.error = exc
            raise

    def launch(self) -> FlowRun:
        """Create this attempt's flow run, or return it if it exists: the idempotency key names the
        attempt (sweep uid, trial number, attempt), so a parent that restarts never starts it twice."""
        spec = self.spec
        run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync call inside a task thread
            self._settings.deployment,
            parameters=self.parameters,
            work_queue_name=self.queue_name,
            flow_run_name=f"{spec.sweep_name}-trial-{spec.number}-{spec.attempt}",
            idempotency_key=f"prefect-hpo:{self.sweep_uid}:{spec.number}:{spec.attempt}",
            timeout=0,
        )
        self.flow_run_id = str(run.id)
        return run

    def _run(self) -> TrialRecord:
        spec = self.spec
        run = self.launch()
        verdict: Outcome | None = None
        with get_client(sync_client=True) as client:
            running_since: float | None = None
            cancelling_sent = False
            while True:
                state = client.read_flow_run(run.id).state
                if state is not None and state.is_final():
                    break
                now = time.time()
                if verdict is None and not cancelling_sent and state is not None and state.is_cancelling():
                    # a person cancelled it (the UI, the API): recorded at once, before its worker ends the
                    # run, which may take longer than heartbeat_timeout; a silence after this is no death
                    verdict = Outcome(TrialState.PRUNED, reason=_cancelled_in_prefect(run.id))
                    self._record(verdict)
                if running_since is None and state is not None and state.is_running():
                    running_since = now
                if running_since is not None and verdict is None:
                    verdict = self._verdict(now, running_since)
                    if verdict is not None:
                        # record first, then act: a late write from the trial cannot overwrite it
                        self._record(verdict)
                        if verdict.state == TrialState.FAIL_RECOVERABLE:
                            client.set_flow_run_state(run.id, Crashed(message=verdict.error), force=True)
                        else:
                            self._cancel.set()
                if self._cancel.is_set() and not cancelling_sent:
                    client.set_flow_run_state(run.id, Cancelling(message=self.cancel_reason), force=True)
                    cancelling_sent = True
                self._cancel.wait(self._settings.poll_interval)
        record = self._store.trial(spec.sweep_id, spec.number)
        if record.state != TrialState.RUNNING:
            return record
        # the flow run ended without recording the trial's end
        if self.cancel_reason is not None:
            kind = TrialState.INTERRUPTED if is_interrupt_request(self.cancel_reason) else TrialState.PRUNED
            outcome = Outcome(kind, reason=self.cancel_reason)
        elif state is not None and state.is_cancelled():
            outcome = Outcome(TrialState.PRUNED, reason=_cancelled_in_prefect(run.id))
        else:
            name = state.name if state is not None else "unknown"
            message = state.message if state is not None else ""
            outcome = Outcome(
                TrialState.FAIL_RECOVERABLE,
                error=f"flow run {run.id} ended {name} without recording the trial: {message}",
            )
        return self._store.finish_trial(record.id, outcome)

    def _verdict(self, now: float, running_since: float) -> Outcome | None:
        """A running trial past its time limit, or silent past the heartbeat timeout, or None."""
        if self._time_limit is not None and now - running_since > self._time_limit:
            reason = f"ran past trial_time_limit={self._time_limit:g}s and was stopped"
            self.cancel_reason = reason
            return Outcome(
                TrialState.FAIL, error=f"TrialTimeout: {reason}", reason=reason, duration=now - running_since
            )
        last = max(self._store.heartbeat(self.spec.trial_id) or running_since, running_since)
        if now - last > self._settings.heartbeat_timeout:
            return Outcome(
                TrialState.FAIL_RECOVERABLE,
                error=f"no heartbeat for {now - last:.0f}s (heartbeat_timeout={self._settings.heartbeat_timeout:g}s): "
                "its worker died or lost the trial store",
                duration=now - running_since,
            )
        return None

    def _record(self, outcome: Outcome) -> None:
        with contextlib.suppress(StoreError):  # the trial recorded its own end a moment before
            self._store.finish_trial(self.spec.trial_id, outcome)

    def cancel(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
            self._store.request_stop(self.spec.trial_id, reason)
            self._cancel.set()


class WorkPoolTrials(ClosedOnExit):
    """The executor of a sweep with `WorkPoolExecutor` settings: each trial a flow run on the pool (an
    `AdoptingExecutor`: a trial's flow run outlives the parent that launched it, and a resumed sweep
    watches it again)."""

    def __init__(
        self,
        settings: WorkPoolExecutor,
        store: SqlTrialStore,
        train_path: str,
        storage: str,
        trial_time_limit: float | None = None,
    ) -> None:
        """`storage` is how the workers name the store: a reference ("env:NAME", "block:NAME") each worker
        resolves, or a URL without credentials; it travels as a flow-run parameter, which Prefect stores."""
        refuse_credentials_for_workers(storage)
        self._settings, self._store, self._train_path = settings, store, train_path
        self._storage = storage
        self._time_limit = trial_time_limit
        self._uids: dict[int, str] = {}
        self._ended = EndedTrials()

    def parameters(self, spec: TrialSpec) -> dict[str, Any]:
        """The trial flow's parameters: plain data only (they show in the UI)."""
        return {
            "storage": self._storage,
            "sweep_id": spec.sweep_id,
            "number": spec.number,
            "train": self._train_path,
            "spec": {
                "sweep_name": spec.sweep_name,
                "objectives": [o.to_dict() for o in spec.objectives],
                "max_steps": spec.max_steps,
                "pass_trial": spec.pass_trial,
                "scheduler": scheduler_to_dict(spec.scheduler),
                "min_steps": spec.min_steps,
                "checkpoint_path": spec.checkpoint_path,
                "max_total_steps": spec.max_total_steps,
                "resume_step": spec.resume_step,
                "heartbeat_interval": self._settings.heartbeat_interval,
                "resources": dict(spec.resources),  # claimed on the host the flow run lands on
            },
        }

    def job(self, record: TrialRecord, spec: TrialSpec) -> WorkPoolJob:
        """The launch-and-watch job of one attempt (not started)."""
        queue_name = self._settings.queue_for(record.config, spec.resources)
        uid = self._uids.setdefault(spec.sweep_id, str(self._store.sweep(spec.sweep_id)["uid"]))
        return WorkPoolJob(spec, self.parameters(spec), queue_name, self._store, self._settings, self._time_limit, uid)

    def submit(self, record: TrialRecord, spec: TrialSpec) -> TrialHandle:
        job = self.job(record, spec)
        handle = TrialHandle(record=record, spec=spec, started=time.time(), detail={"job": job})
        self._ended.watch(handle, trial_task.submit(record.number, record.config, job), job)
        return handle

    def adopt(self, record: TrialRecord, spec: TrialSpec) -> TrialHandle:
        """Watch again a trial a dead parent launched: the launch is idempotent per attempt (its flow run's
        idempotency key), so this finds the running flow run instead of starting a second one."""
        return self.submit(record, spec)

    def wait_any(self, handles: Sequence[TrialHandle], timeout: float | None) -> list[TrialHandle]:
        return self._ended.wait_any(timeout)

    def cancel(self, handle: TrialHandle, reason: str) -> None:
        job: WorkPoolJob = handle.detail["job"]
        job.cancel(reason)


def _cancelled_in_prefect(run_id: object) -> str:
    return f"flow run {run_id} was cancelled in Prefect; not retried"
