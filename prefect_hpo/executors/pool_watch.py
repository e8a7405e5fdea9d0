"""One thread that watches every trial a sweep has in flight on a work pool.

A trial on a work pool is a flow run on some worker; it records its own reports, heartbeats and end in
the trial store. The sweep's parent learns of its trials' ends from the store, in one query per tick for
all of them (`SqlTrialStore.pulses`), and reads flow-run states from Prefect only for the trials that need
it, in one request per tick: a trial whose heartbeat has gone silent (its worker died, or a person cancelled
its run and its worker ended it), one not yet started (still queued), one the sweep asked to stop. At a
thousand trials in flight that is two queries a tick, where a watcher per trial made a thousand requests.

The decisions about each trial (time limit, silence, how a run that ended without recording it ended) are
the job's (`WorkPoolJob`); this module does the batching, the thread and its errors.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, State
from prefect.states import Cancelling

from prefect_hpo.store.heartbeats import Pulse

_log = logging.getLogger(__name__)

#: Flow runs read in one request: Prefect's server refuses a limit above PREFECT_SERVER_API_DEFAULT_LIMIT (200).
_PAGE = 200


class WatchedJob(Protocol):
    """What the watcher asks of one trial's job (`WorkPoolJob`)."""

    @property
    def trial_id(self) -> int: ...

    @property
    def flow_run_id(self) -> str | None:
        """Its flow run, once launched; None for a trial offered to runners (whose runs are watched apart)."""
        ...

    def observe(self, now: float, pulse: Pulse | None) -> bool:
        """Take the trial's pulse from the store; True when its flow run's state is wanted too."""
        ...

    def wants_cancelling(self) -> str | None:
        """The message to cancel the flow run with, once, if the sweep asked the trial to stop."""
        ...

    def cancelling_sent(self) -> None: ...

    def judge(self, now: float, state: State | None, client: FlowRunsClient) -> None:
        """Act on the flow run's state (None: the run is gone)."""
        ...

    def give_up(self, error: BaseException) -> None:
        """End the job with `error`: the watcher could not go on."""
        ...


class FlowRunsClient(Protocol):
    """The two calls of Prefect's client the watcher makes (`SyncPrefectClient`)."""

    def read_flow_runs(
        self, *, flow_run_filter: FlowRunFilter | None = None, limit: int | None = None
    ) -> list[FlowRun]: ...

    def set_flow_run_state(self, flow_run_id: UUID, state: State, force: bool = False) -> Any: ...


class StorePulses(Protocol):
    def pulses(self, trial_ids: Sequence[int]) -> dict[int, Pulse]: ...


class PoolWatch:
    """Watches its jobs from one daemon thread, started with the first job, every `interval` seconds (at
    once when a job is added or asks to stop). `close()` stops it; jobs still watched then end with an error
    (their flow runs go on; a resumed sweep adopts them).

    A tick that fails (the store or Prefect's API unreachable) is tried again at the next; failures for
    longer than `patience` seconds end every watched job with the error, as a job's own failure would."""

    def __init__(
        self,
        store: StorePulses,
        interval: float,
        patience: float,
        client: Callable[[], AbstractContextManager[FlowRunsClient]] = lambda: get_client(sync_client=True),
    ) -> None:
        self._store, self._interval, self._patience, self._client = store, interval, patience, client
        self._jobs: dict[int, WatchedJob] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, job: WatchedJob) -> None:
        """Watch `job` (launched: its flow run exists) until it ends."""
        with self._lock:
            if self._closed.is_set():
                job.give_up(RuntimeError("the sweep's watcher of its work-pool trials is closed"))
                return
            self._jobs[job.trial_id] = job
            if self._thread is None:
                # Prefect's settings (the API of the sweep's server) live in context variables
                context = contextvars.copy_context()
                self._thread = threading.Thread(
                    target=context.run, args=(self._run,), daemon=True, name="hpo-pool-watch"
                )
                self._thread.start()
        self._wake.set()

    def wake(self) -> None:
        """Look again now (a job asked its trial to stop)."""
        self._wake.set()

    def watching(self) -> int:
        """How many trials it watches now."""
        with self._lock:
            return len(self._jobs)

    def done(self, job: WatchedJob) -> None:
        with self._lock:
            if self._jobs.get(job.trial_id) is job:
                del self._jobs[job.trial_id]

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self._give_up_all(RuntimeError("the sweep ended while this trial's flow run was still running"))

    def _run(self) -> None:
        failing_since: float | None = None
        with self._client() as client:
            while not self._closed.is_set():
                self._wake.wait(self._interval)
                self._wake.clear()
                if self._closed.is_set():
                    return
                try:
                    self.tick(client)
                    failing_since = None
                except Exception as exc:  # noqa: BLE001 - a hiccup of the store or the API is tried again
                    now = time.monotonic()
                    if failing_since is None:
                        failing_since = now
                        _log.warning(
                            "watching the trials' flow runs failed (%s: %s); trying again", type(exc).__name__, exc
                        )
                    elif now - failing_since > self._patience:
                        self._give_up_all(exc)
                        failing_since = None

    def tick(self, client: FlowRunsClient) -> None:
        """One look at every job: their pulses from the store, then the states of the flow runs wanted."""
        with self._lock:
            jobs = list(self._jobs.values())
        if not jobs:
            return
        now = time.time()
        pulses = self._store.pulses([job.trial_id for job in jobs])
        wanted: list[WatchedJob] = []
        for job in jobs:
            if job.observe(now, pulses.get(job.trial_id)):
                wanted.append(job)
            message = job.wants_cancelling()
            if message is not None and job.flow_run_id is not None:
                client.set_flow_run_state(UUID(job.flow_run_id), Cancelling(message=message), force=True)
                job.cancelling_sent()
        wanted = [job for job in wanted if job.flow_run_id is not None]  # a job without a run wants none
        if not wanted:
            return
        ids = [UUID(job.flow_run_id) for job in wanted if job.flow_run_id is not None]
        states: dict[str, State | None] = {}
        for start in range(0, len(ids), _PAGE):  # a server answers at most its default limit (200) a request
            page = ids[start : start + _PAGE]
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=page)), limit=len(page))
            states.update({str(run.id): run.state for run in runs})
        for job in wanted:
            job.judge(now, states.get(job.flow_run_id or ""), client)

    def _give_up_all(self, error: BaseException) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
        for job in jobs:
            with contextlib.suppress(Exception):
                job.give_up(error)
