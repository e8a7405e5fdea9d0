"""Trials on a work pool through long-lived runners (`WorkPoolExecutor(runners=N)`).

One flow run per trial pays a worker's poll, a new Python process and the training code's imports for
every trial: 3-8 s here, most of a short trial's time. In runner mode the parent launches up to N runner
flow runs of the trial deployment (`prefect_hpo.flows.runner`) on the queues its trials ask for, and
offers each attempt in the store (`store.dispatch`); a runner claims an offer, runs the trial as a task
run of its own, and claims the next. The parent learns of every end from the store, through the sweep's
one `PoolWatch` (one query a tick for all trials in flight), and never reads a trial's flow run: a trial's
silence past `heartbeat_timeout` after its claim is its runner's death, recorded FAIL_RECOVERABLE, and the
retry is offered again. The same watcher reads the runners' own flow runs every few seconds, and launches
a runner again where trials wait and fewer are alive (a runner ends when idle, at its limits, or dies).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, State
from prefect.deployments import run_deployment
from prefect.states import Cancelled, Crashed

from prefect_hpo.errors import PrefectHPOError, StoreError
from prefect_hpo.executors.base import ClosedOnExit, EndedTrials, TrialHandle
from prefect_hpo.executors.pool_watch import FlowRunsClient, PoolWatch
from prefect_hpo.executors.runner_limits import RunnerLimits
from prefect_hpo.executors.settings import WorkPoolExecutor
from prefect_hpo.executors.workpool import trial_settings
from prefect_hpo.records import Outcome, TrialRecord, TrialState, is_interrupt_request
from prefect_hpo.store.heartbeats import Pulse
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.trial import TrialSpec


class OfferedJob:
    """One attempt offered to the runners, as the parent watches it (a `WatchedJob` without a flow run)."""

    def __init__(
        self,
        handle: TrialHandle,
        queue: str,
        store: SqlTrialStore,
        settings: WorkPoolExecutor,
        time_limit: float | None,
        ended: EndedTrials,
        on_end: Callable[[OfferedJob], None],
        runner_lost: Callable[[str], None],
    ) -> None:
        self.handle, self.queue = handle, queue
        self._runner_lost = runner_lost
        self._store, self._settings, self._time_limit = store, settings, time_limit
        self._ended, self._on_end = ended, on_end
        self._lock = threading.Lock()
        self._done = False
        self._claimed_at: float | None = None
        self._decided = False
        self.cancel_reason: str | None = None
        self.final: TrialRecord | None = None
        self.error: BaseException | None = None

    @property
    def trial_id(self) -> int:
        return self.handle.spec.trial_id

    @property
    def flow_run_id(self) -> str | None:
        return None  # its runner's flow run is watched as a runner (`RunnerRun`), not per trial

    def observe(self, now: float, pulse: Pulse | None) -> bool:
        """Ended (the runner recorded it, or the sweep did), waiting for a runner, or running: silent past
        heartbeat_timeout is a dead runner; past its time limit by as much, a runner that could not stop it."""
        if pulse is None or pulse.state != TrialState.RUNNING:
            spec = self.handle.spec
            self._end(self._store.trial(spec.sweep_id, spec.number))
            return False
        if pulse.heartbeat_at is None or self._decided:
            return False  # not claimed yet (a new attempt has no heartbeat until a runner claims it)
        self._claimed_at = self._claimed_at or pulse.heartbeat_at
        timeout = self._settings.heartbeat_timeout
        if self._time_limit is not None and now - self._claimed_at > self._time_limit + timeout:
            reason = f"ran past trial_time_limit={self._time_limit:g}s and its runner did not stop it"
            self._decide(Outcome(TrialState.FAIL, error=f"TrialTimeout: {reason}", reason=reason))
        elif now - pulse.heartbeat_at > timeout:
            spec = self.handle.spec
            claimant = self._store.claimant(spec.trial_id, spec.attempt)
            self._decide(
                Outcome(
                    TrialState.FAIL_RECOVERABLE,
                    error=f"no heartbeat for {now - pulse.heartbeat_at:.0f}s (heartbeat_timeout={timeout:g}s): "
                    f"its runner ({claimant}) died or lost the trial store",
                    duration=now - self._claimed_at,
                )
            )
            if claimant is not None and "/" in claimant:
                self._runner_lost(claimant.rsplit("/", 1)[1])  # its flow run: no longer counted as a runner
        return False

    def wants_cancelling(self) -> str | None:
        return None  # a runner hears the sweep's stop requests from the store

    def cancelling_sent(self) -> None:
        return None

    def judge(self, now: float, state: State | None, client: FlowRunsClient) -> None:
        return None  # never asked: `observe` wants no flow run state

    def give_up(self, error: BaseException) -> None:
        self.error = error
        self._finish()

    def cancel(self, reason: str) -> None:
        """Stop the attempt: taken back at once if no runner has claimed it, else its runner stops it when it
        reads the request (within half a second)."""
        with self._lock:
            if self.cancel_reason is not None or self._done:
                return
            self.cancel_reason = reason
        spec = self.handle.spec
        self._store.request_stop(spec.trial_id, reason)
        if self._store.withdraw(spec.trial_id, spec.attempt):
            kind = TrialState.INTERRUPTED if is_interrupt_request(reason) else TrialState.PRUNED
            with contextlib.suppress(StoreError):  # its end was recorded a moment before
                self._store.end_attempt(spec.trial_id, spec.attempt, Outcome(kind, reason=reason))

    def _decide(self, outcome: Outcome) -> None:
        self._decided = True
        spec = self.handle.spec
        with contextlib.suppress(StoreError):  # the runner recorded its own end a moment before
            self._store.end_attempt(spec.trial_id, spec.attempt, outcome)

    def _end(self, record: TrialRecord) -> None:
        self.final = record
        self._finish()

    def _finish(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self.handle.final, self.handle.error = self.final, self.error
        self._on_end(self)
        self._ended.put(self.handle)


class RunnerRun:
    """One runner's flow run, as the parent watches it: its state read every `look_every` seconds."""

    def __init__(self, key: int, queue: str, look_every: float, fleet: RunnerFleet) -> None:
        self.key, self.queue = key, queue
        self._look_every, self._fleet = look_every, fleet
        self._next_look = time.time() + look_every
        #: set once its launch has created it
        self.flow_run_id: str | None = None
        #: a trial it claimed went silent: it is looked at, marked Crashed and replaced at the next tick
        self.lost = False

    @property
    def trial_id(self) -> int:
        return -self.key  # never a trial's id: its pulse is always None

    def observe(self, now: float, pulse: Pulse | None) -> bool:
        if self.lost:
            return True
        if now < self._next_look:
            return False
        self._next_look = now + self._look_every
        return True

    def wants_cancelling(self) -> str | None:
        return None

    def cancelling_sent(self) -> None:
        return None

    def judge(self, now: float, state: State | None, client: FlowRunsClient) -> None:
        if self.lost and state is not None and not state.is_final() and self.flow_run_id is not None:
            # its trial went silent: the runner died with its process or machine, and its worker (if alive)
            # never reports it; Crashed, as the per-trial watcher marks a silent trial's run
            message = "its trial went silent past heartbeat_timeout: the runner died; the trial runs again"
            client.set_flow_run_state(UUID(self.flow_run_id), Crashed(message=message), force=True)
        if self.lost or state is None or state.is_final():
            self._fleet.ended(self)

    def give_up(self, error: BaseException) -> None:
        return None


class RunnerFleet:
    """A sweep's runner flow runs: launched where trials wait and fewer runners are alive, at most N.

    Each launch (one `run_deployment`, a few requests) runs on a thread of its own, in the sweep's Prefect
    context, so that the loop goes on offering trials meanwhile; a runner counts as alive from the moment
    its launch starts. A launch that fails (no such deployment, the API unreachable) is handed to `failed`,
    and nothing more is launched."""

    def __init__(
        self,
        settings: WorkPoolExecutor,
        watch: PoolWatch,
        parameters: dict[str, Any],
        limits: dict[str, RunnerLimits],
        sweep_name: str,
        failed: Callable[[BaseException], None],
    ) -> None:
        self._settings, self._watch, self._parameters = settings, watch, parameters
        self._limits, self._sweep_name, self._failed = limits, sweep_name, failed
        self._lock = threading.Lock()
        self._alive: dict[int, RunnerRun] = {}
        self._in_flight: Counter[str] = Counter()
        self._keys = itertools.count(1)
        self._closed = False
        self._launches: list[threading.Thread] = []
        self.launched = 0

    def trial_started(self, queue: str) -> None:
        with self._lock:
            self._in_flight[queue] += 1
        self.ensure()

    def trial_ended(self, queue: str) -> None:
        with self._lock:
            self._in_flight[queue] -= 1

    def ended(self, run: RunnerRun) -> None:
        """A runner's flow run ended (idle, at its limits, crashed, cancelled): another starts if trials wait."""
        self._watch.done(run)
        with self._lock:
            self._alive.pop(-run.trial_id, None)
        self.ensure()

    def alive(self) -> int:
        with self._lock:
            return len(self._alive)

    def lost(self, flow_run_id: str) -> None:
        """A trial that runner `flow_run_id` claimed went silent: the runner is taken for dead."""
        with self._lock:
            for run in self._alive.values():
                if run.flow_run_id == flow_run_id:
                    run.lost = True
        self._watch.wake()

    def ensure(self) -> None:
        """Launch runners on the queues whose trials in flight outnumber their runners, up to N in all."""
        while True:
            with self._lock:
                if self._closed or len(self._alive) >= self._settings.runners:
                    return
                by_queue = Counter(run.queue for run in self._alive.values())
                short = [queue for queue, count in self._in_flight.most_common() if count > by_queue[queue]]
                if not short:
                    return
                key = next(self._keys)
                run = RunnerRun(key, short[0], max(1.0, self._settings.heartbeat_timeout / 3), self)
                self._alive[key] = run
                context = contextvars.copy_context()  # the sweep's Prefect settings and flow run
                launch = threading.Thread(
                    target=context.run, args=(self._launch, run), daemon=True, name=f"hpo-runner-launch-{key}"
                )
                self._launches = [thread for thread in self._launches if thread.is_alive()] + [launch]
            launch.start()

    def _launch(self, run: RunnerRun) -> None:
        limits = self._limits.setdefault(run.queue, RunnerLimits(queue=run.queue))
        try:
            launched: FlowRun = run_deployment(  # type: ignore[assignment]  # sync: called outside any event loop
                self._settings.deployment,
                parameters={**self._parameters, "runner": limits.to_parameters()},
                work_queue_name=run.queue,
                flow_run_name=f"{self._sweep_name}-runner-{run.key}",
                idempotency_key=f"prefect-hpo:runner:{uuid.uuid4().hex}",
                timeout=0,
            )
        except Exception as exc:  # noqa: BLE001 - every launch failure ends the sweep with the same advice
            with self._lock:
                self._alive.pop(run.key, None)
                self._closed = True
            self._failed(exc)
            return
        run.flow_run_id = str(launched.id)
        with self._lock:
            self.launched += 1
        self._watch.add(run)

    def close(self, client: Callable[[], AbstractContextManager[FlowRunsClient]]) -> None:
        """Launch nothing more; wait (briefly) for launches under way, and cancel the runners that have not
        started (their trials are over: a worker would start one only for it to end at once)."""
        with self._lock:
            self._closed = True
            launches = list(self._launches)
        for launch in launches:
            launch.join(timeout=30)
        with self._lock:
            ids = [UUID(run.flow_run_id) for run in self._alive.values() if run.flow_run_id is not None]
        if not ids:
            return
        with contextlib.suppress(Exception), client() as api:  # only tidiness: a runner ends by itself anyway
            waiting = api.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids))
            for run in waiting:
                if run.state is not None and (run.state.is_scheduled() or run.state.is_pending()):
                    api.set_flow_run_state(run.id, Cancelled(message="the sweep ended before this runner started"))


class RunnerPoolTrials(ClosedOnExit):
    """The executor of a sweep with `WorkPoolExecutor(runners=N)`: trials offered in the store, run by up to
    N runner flow runs (an `AdoptingExecutor`: a resumed sweep watches the attempts its dead parent offered,
    and offers them again if their offers are gone)."""

    def __init__(
        self,
        settings: WorkPoolExecutor,
        store: SqlTrialStore,
        train_path: str,
        storage: str,
        trial_time_limit: float | None = None,
    ) -> None:
        self._settings, self._store, self._train_path, self._storage = settings, store, train_path, storage
        self._time_limit = trial_time_limit
        self._ended = EndedTrials()
        self._watch = PoolWatch(store, settings.watch_interval, patience=settings.heartbeat_timeout)
        self._fleet: RunnerFleet | None = None
        self._sweep_id: int | None = None
        self._lock = threading.Lock()
        self._jobs: dict[int, OfferedJob] = {}  # in flight, by trial id

    def _fleet_for(self, spec: TrialSpec) -> RunnerFleet:
        if self._fleet is None:
            self._sweep_id = spec.sweep_id
            parameters = {
                "storage": self._storage,
                "sweep_id": spec.sweep_id,
                "number": -1,
                "train": self._train_path,
                "spec": {"sweep_name": spec.sweep_name},
            }
            limits = {
                queue: self._limits(queue) for queue in {*self._settings.queues.values(), self._settings.default_queue}
            }
            self._fleet = RunnerFleet(
                self._settings, self._watch, parameters, limits, spec.sweep_name, self._launch_failed
            )
        return self._fleet

    def _launch_failed(self, error: BaseException) -> None:
        """No runner could be launched: every trial in flight ends with an error that names the fix, and the
        sweep with it (as a trial's launch failing does with a flow run per trial)."""
        failure = PrefectHPOError(
            f"executor: a trial runner could not be launched from deployment {self._settings.deployment!r} "
            f"({type(error).__name__}: {error}); deploy the trial flow to pool {self._settings.pool!r} with "
            "prefect_hpo.setup_work_pool(), or name its deployment in WorkPoolExecutor(deployment=...)"
        )
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.give_up(failure)

    def _limits(self, queue: str) -> RunnerLimits:
        s = self._settings
        return RunnerLimits(
            queue=queue,
            idle_timeout=s.runner_idle_timeout,
            max_trials=s.runner_max_trials,
            max_seconds=s.runner_max_seconds,
            trial_time_limit=self._time_limit,
            heartbeat_interval=s.heartbeat_interval,
        )

    def submit(self, record: TrialRecord, spec: TrialSpec) -> TrialHandle:
        queue = self._settings.queue_for(record.config, spec.resources)
        fleet = self._fleet_for(spec)
        offered = trial_settings(spec, self._settings.heartbeat_interval)
        self._store.offer(spec.sweep_id, spec.trial_id, spec.attempt, queue, spec.resources.get("gpu", 0), offered)
        handle = TrialHandle(record=record, spec=spec, started=time.time())
        job = OfferedJob(
            handle,
            queue,
            self._store,
            self._settings,
            self._time_limit,
            self._ended,
            self._job_ended,
            fleet.lost,
        )
        handle.detail["job"] = job
        with self._lock:
            self._jobs[spec.trial_id] = job
        self._watch.add(job)
        fleet.trial_started(queue)
        return handle

    def _job_ended(self, job: OfferedJob) -> None:
        with self._lock:
            if self._jobs.get(job.trial_id) is job:
                del self._jobs[job.trial_id]
        self._watch.done(job)
        if self._fleet is not None:
            self._fleet.trial_ended(job.queue)

    def adopt(self, record: TrialRecord, spec: TrialSpec) -> TrialHandle:
        """Watch again an attempt a dead parent offered: its offer stands (offering it again keeps it, claimed
        or not), and runners are launched for it if none is alive."""
        return self.submit(record, spec)

    def wait_any(self, handles: Sequence[TrialHandle], timeout: float | None) -> list[TrialHandle]:
        return self._ended.wait_any(timeout)

    def cancel(self, handle: TrialHandle, reason: str) -> None:
        job: OfferedJob = handle.detail["job"]
        job.cancel(reason)
        self._watch.wake()

    def close(self) -> None:
        """Stop launching runners and take back the offers no runner claimed; runners see the sweep is over
        (its status, within a second) and end."""
        if self._fleet is not None:
            self._fleet.close(lambda: get_client(sync_client=True))
        self._watch.close()
        if self._sweep_id is not None:
            with contextlib.suppress(StoreError):
                self._store.withdraw_all(self._sweep_id)
