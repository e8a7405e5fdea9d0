"""Trials as flow runs on a Prefect work pool: Prefect's server, pools and workers are the distributed engine.

The parent submits each trial as a Prefect task that starts one flow run of the
`hpo-trial` deployment (`run_deployment`, a child of that task, so the UI shows
sweep -> trial task -> trial flow run) on the queue its resources ask for. The
trial flow records its own end in the trial store. The sweep watches all its flow runs from one thread
(`PoolWatch`: the store in one query a tick, Prefect's API only for the runs that need a look); a run that
ended without recording anything (crashed, killed, cancelled) has its end recorded from there.
Launches carry an idempotency key per attempt (sweep uid, trial, attempt),
so a relaunch never starts the same attempt twice.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from prefect.client.schemas.objects import FlowRun, State
from prefect.deployments import run_deployment
from prefect.states import Crashed

from prefect_hpo.errors import StoreError
from prefect_hpo.executors.base import ClosedOnExit, EndedTrials, TrialHandle
from prefect_hpo.executors.jobs import trial_task
from prefect_hpo.executors.pool_watch import FlowRunsClient, PoolWatch
from prefect_hpo.executors.settings import WorkPoolExecutor as WorkPoolExecutor
from prefect_hpo.records import Outcome, TrialRecord, TrialState, is_interrupt_request
from prefect_hpo.schedulers import scheduler_to_dict
from prefect_hpo.storage_refs import refuse_credentials_for_workers
from prefect_hpo.store.heartbeats import Pulse
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.trial import TrialSpec


class WorkPoolJob:
    """One trial's flow run (a `TrialJob`): the task that shows it launches it and waits; the sweep's one
    `PoolWatch` thread feeds it what the store and Prefect say, and it decides; the loop may cancel it."""

    def __init__(
        self,
        spec: TrialSpec,
        parameters: dict[str, Any],
        queue_name: str,
        store: SqlTrialStore,
        settings: WorkPoolExecutor,
        time_limit: float | None,
        sweep_uid: str,
        watch: PoolWatch | None = None,
    ) -> None:
        self._time_limit = time_limit
        self.sweep_uid = sweep_uid
        self.spec, self.parameters, self.queue_name = spec, parameters, queue_name
        self._store, self._settings, self._watch = store, settings, watch
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self.cancel_reason: str | None = None
        self._cancel_sent = False
        self.flow_run_id: str | None = None
        self._launched = 0.0
        self._running_since: float | None = None  # its first heartbeat (or its run's start), as seen from here
        self._beat: float | None = None
        self._next_look = 0.0
        self._decided = False  # the sweep recorded the trial's end itself (time limit, silence, a person's cancel)
        self.final: TrialRecord | None = None
        self.error: BaseException | None = None

    @property
    def trial_id(self) -> int:
        return self.spec.trial_id

    def execute(self, task_run_id: str | None = None) -> TrialRecord:
        try:
            if task_run_id is not None:
                self._store.set_task_run(self.spec.trial_id, task_run_id)
            run = self.launch()
            return self.follow(str(run.id), self._launched)
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
        self.flow_run_id, self._launched = str(run.id), time.time()
        return run

    def follow(self, flow_run_id: str, launched: float) -> TrialRecord:
        """Watch the attempt's flow run `flow_run_id` (launched at `launched`, unix seconds) until the trial
        ends, and return that end as stored."""
        if self._watch is None:
            raise RuntimeError("a work-pool job is watched by its executor's PoolWatch (WorkPoolTrials.job)")
        self.flow_run_id, self._launched = flow_run_id, launched
        self._next_look = launched + self._settings.heartbeat_timeout
        self._watch.add(self)
        self._ended.wait()
        if self.error is not None:
            raise self.error
        assert self.final is not None
        return self.final

    # -- what the watcher feeds it (`PoolWatch`, one thread for all jobs) --

    def observe(self, now: float, pulse: Pulse | None) -> bool:
        """The trial's row: ended (the trial recorded it, or the sweep did), or running with its last
        heartbeat. True when the flow run's state is wanted: a run the sweep cancelled, until it ends; a
        silent trial; one not started yet, every heartbeat_timeout."""
        if pulse is None or pulse.state != TrialState.RUNNING:
            if not self._cancel_sent:
                self._end(self._store.trial(self.spec.sweep_id, self.spec.number))
                return False
            return True  # a run the sweep cancelled holds its slot until its worker has ended it
        self._beat = pulse.heartbeat_at
        if self._running_since is None and pulse.heartbeat_at is not None:
            self._running_since = pulse.heartbeat_at  # the trial flow beats once as it starts
        if self._decided or self._cancel_sent:
            return True
        if self._running_since is not None:
            if self._time_limit is not None and now - self._running_since > self._time_limit:
                reason = f"ran past trial_time_limit={self._time_limit:g}s and was stopped"
                self._decide(
                    Outcome(
                        TrialState.FAIL,
                        error=f"TrialTimeout: {reason}",
                        reason=reason,
                        duration=now - self._running_since,
                    )
                )
                self.cancel(reason)
                return False
            return now - max(self._beat or self._running_since, self._running_since) > self._settings.heartbeat_timeout
        if now >= self._next_look:  # not started: still queued, or died before its first heartbeat
            self._next_look = now + self._settings.heartbeat_timeout
            return True
        return False

    def wants_cancelling(self) -> str | None:
        with self._lock:  # not for a job that has ended: its run is ending by itself (e.g. "Pruned")
            if self.cancel_reason is None or self._cancel_sent or self._ended.is_set():
                return None
            return self.cancel_reason

    def cancelling_sent(self) -> None:
        self._cancel_sent = True

    def judge(self, now: float, state: State | None, client: FlowRunsClient) -> None:
        """Act on the flow run's state: ended (record how, if the trial did not), cancelled by a person,
        running but silent past heartbeat_timeout (its worker died: Crashed, to be retried), or queued."""
        if state is None or state.is_final():
            self._end(self._concluded(state))
            return
        if self._decided:
            return
        if state.is_cancelling():
            # a person cancelled it (the UI, the API); its worker ends the run, which may take longer than
            # heartbeat_timeout: recorded now, and a silence after this is no death
            self._decide(Outcome(TrialState.PRUNED, reason=_cancelled_in_prefect(self.flow_run_id)))
            return
        if not state.is_running():
            return  # scheduled, pending, late: waiting for a worker
        since = self._running_since = self._running_since or (
            state.timestamp.timestamp() if state.timestamp is not None else now
        )
        last = max(self._beat or since, since)
        if now - last > self._settings.heartbeat_timeout:
            outcome = Outcome(
                TrialState.FAIL_RECOVERABLE,
                error=f"no heartbeat for {now - last:.0f}s (heartbeat_timeout={self._settings.heartbeat_timeout:g}s): "
                "its worker died or lost the trial store",
                duration=now - since,
            )
            # record first, then act: a late write from the trial cannot overwrite it
            self._decide(outcome)
            assert self.flow_run_id is not None
            client.set_flow_run_state(UUID(self.flow_run_id), Crashed(message=outcome.error), force=True)

    def give_up(self, error: BaseException) -> None:
        self.error = error
        self._ended.set()

    def _concluded(self, state: State | None) -> TrialRecord:
        """The trial's end once its flow run has ended: as the trial (or the sweep) recorded it, else
        recorded here from how the run ended."""
        record = self._store.trial(self.spec.sweep_id, self.spec.number)
        if record.state != TrialState.RUNNING:
            return record
        if self.cancel_reason is not None:
            kind = TrialState.INTERRUPTED if is_interrupt_request(self.cancel_reason) else TrialState.PRUNED
            outcome = Outcome(kind, reason=self.cancel_reason)
        elif state is not None and state.is_cancelled():
            outcome = Outcome(TrialState.PRUNED, reason=_cancelled_in_prefect(self.flow_run_id))
        else:
            name = state.name if state is not None else "deleted"
            message = state.message if state is not None else ""
            outcome = Outcome(
                TrialState.FAIL_RECOVERABLE,
                error=f"flow run {self.flow_run_id} ended {name} without recording the trial: {message}",
            )
        return self._store.finish_trial(record.id, outcome)

    def _decide(self, outcome: Outcome) -> None:
        self._decided = True
        with contextlib.suppress(StoreError):  # the trial recorded its own end a moment before
            self._store.finish_trial(self.spec.trial_id, outcome)

    def _end(self, record: TrialRecord) -> None:
        self.final = record
        if self._watch is not None:
            self._watch.done(self)
        self._ended.set()

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self.cancel_reason is not None:
                return
            self.cancel_reason = reason
        self._store.request_stop(self.spec.trial_id, reason)
        if self._watch is not None:
            self._watch.wake()


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
        self._watch = PoolWatch(store, settings.watch_interval, patience=settings.heartbeat_timeout)

    def parameters(self, spec: TrialSpec) -> dict[str, Any]:
        """The trial flow's parameters: plain data only (they show in the UI)."""
        return {
            "storage": self._storage,
            "sweep_id": spec.sweep_id,
            "number": spec.number,
            "train": self._train_path,
            "spec": trial_settings(spec, self._settings.heartbeat_interval),
        }

    def job(self, record: TrialRecord, spec: TrialSpec) -> WorkPoolJob:
        """The launch-and-watch job of one attempt (not started)."""
        queue_name = self._settings.queue_for(record.config, spec.resources)
        uid = self._uids.setdefault(spec.sweep_id, str(self._store.sweep(spec.sweep_id)["uid"]))
        return WorkPoolJob(
            spec, self.parameters(spec), queue_name, self._store, self._settings, self._time_limit, uid, self._watch
        )

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

    def close(self) -> None:
        """Stop watching; a trial still in flight keeps its flow run (a resumed sweep adopts it)."""
        self._watch.close()


def trial_settings(spec: TrialSpec, heartbeat_interval: float) -> dict[str, Any]:
    """What the trial flow (or a runner) needs of a trial's settings beyond its row: plain data, shown in the UI."""
    return {
        "sweep_name": spec.sweep_name,
        "objectives": [o.to_dict() for o in spec.objectives],
        "max_steps": spec.max_steps,
        "pass_trial": spec.pass_trial,
        "scheduler": scheduler_to_dict(spec.scheduler),
        "min_steps": spec.min_steps,
        "checkpoint_path": spec.checkpoint_path,
        "max_total_steps": spec.max_total_steps,
        "resume_step": spec.resume_step,
        "heartbeat_interval": heartbeat_interval,
        "resources": dict(spec.resources),  # claimed on the host the flow run lands on
    }


def _cancelled_in_prefect(run_id: object) -> str:
    return f"flow run {run_id} was cancelled in Prefect; not retried"
