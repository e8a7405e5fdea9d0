"""Trials as Prefect task runs on a Dask or Ray cluster, through Prefect's own task runners.

For users who already run a Dask or Ray cluster: the sweep flow runs with
`prefect_dask.DaskTaskRunner` or `prefect_ray.RayTaskRunner` (any Prefect
`TaskRunner` works), and each trial is one task run submitted to it. The task
runs on a cluster worker: it opens the trial store there, runs the training
function (reports and scheduler decisions go through the store, as on every
executor) and commits how the trial ended before it returns. The parent hears
of each end through the future's done-callback and reads the end from the store,
which stays the single source of truth: a task that died without recording
anything (its cluster worker was lost) leaves the trial FAIL_RECOVERABLE, and
the sweep retries it as a new attempt.

A stop (scheduler, budget, `cancel`) reaches the trial through the store, at
its next report, as on the thread executor: a cluster task cannot be killed
from outside without taking its worker down.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from prefect_hpo.executors.base import ClosedOnExit, EndedTrials, TrialHandle
from prefect_hpo.executors.jobs import RunnerJob, trial_task
from prefect_hpo.executors.run_states import TrialEndsAsWarnings
from prefect_hpo.executors.runners import ThreadRunner
from prefect_hpo.executors.settings import ClusterExecutor as ClusterExecutor
from prefect_hpo.records import Outcome, TrialRecord, TrialState
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.trial import TrainFn, TrialSpec

#: One open store per storage URL in each cluster worker process: opening one costs a connection
#: pool and a schema check, which a worker running many trials should pay once. Never used in the parent.
_WORKER_STORES: dict[str, SqlTrialStore] = {}
_WORKER_STORES_LOCK = threading.Lock()


def _worker_store(url: str) -> SqlTrialStore:
    with _WORKER_STORES_LOCK:
        store = _WORKER_STORES.get(url)
        if store is None:
            store = _WORKER_STORES[url] = SqlTrialStore(url, create=False)  # the sweep made it
        return store


class ClusterJob:
    """One trial on a cluster worker (a task parameter, sent by cloudpickle): opens the store there, runs
    the training function in a thread of the worker and commits how the trial ended."""

    def __init__(self, train: TrainFn, storage: str, spec: TrialSpec, time_limit: float | None) -> None:
        self.train, self.storage, self.spec, self.time_limit = train, storage, spec, time_limit

    def execute(self, task_run_id: str | None) -> TrialRecord:
        _quiet_worker()
        spec = self.spec
        store = _worker_store(self.storage)
        current = store.trial(spec.sweep_id, spec.number)
        if current.state != TrialState.RUNNING or current.attempt != spec.attempt:
            return current  # the cluster ran this task again after its end was recorded
        stop = store.stop_request(spec.trial_id)
        if stop is not None:  # stopped while it waited for a cluster slot
            return store.finish_trial(spec.trial_id, Outcome(TrialState.PRUNED, reason=stop), task_run_id=task_run_id)
        if task_run_id is not None and current.task_run_id == task_run_id:
            # the cluster runs a task again when the worker running it died (Dask reschedules it): this
            # attempt was lost with that worker, so record it as such and let the sweep retry it
            lost = Outcome(TrialState.FAIL_RECOVERABLE, error="its cluster worker was lost mid-trial")
            return store.finish_trial(spec.trial_id, lost)
        if task_run_id is not None:
            store.set_task_run(spec.trial_id, task_run_id)
        # the training function runs in a thread of this worker, so the time limit can be watched here
        return RunnerJob(spec, ThreadRunner(self.train, store), store, self.time_limit).execute(task_run_id)


@functools.cache
def _quiet_worker() -> None:
    """A failed trial is logged at WARNING on a cluster worker too, as in the parent (once per worker process:
    the filter touches only the task named "trial")."""
    logging.getLogger("prefect.task_runs").addFilter(TrialEndsAsWarnings())


class _Settled:
    """The end of one cluster trial, read from the store once its task is done."""

    def __init__(self, store: SqlTrialStore, spec: TrialSpec, future: Any) -> None:
        self._store, self._spec, self._future = store, spec, future
        self.final: TrialRecord | None = None
        self.error: BaseException | None = None

    def settle(self) -> None:
        """Called from the future's done-callback: the store's record, or FAIL_RECOVERABLE if the task left none."""
        try:
            record = self._store.trial(self._spec.sweep_id, self._spec.number)
            if record.state == TrialState.RUNNING and record.attempt == self._spec.attempt:
                record = self._store.finish_trial(
                    record.id,
                    Outcome(
                        TrialState.FAIL_RECOVERABLE,
                        error=f"the cluster task ended without recording the trial: {self._task_error()}",
                    ),
                )
            self.final = record
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which raises it in the flow
            self.error = exc

    def _task_error(self) -> str:
        try:
            state = self._future.state
        except Exception as exc:  # noqa: BLE001 - the cluster's own error types vary; report what it said
            return f"{type(exc).__name__}: {exc}"
        return f"{state.name}: {state.message}" if state is not None else "no state"


class ClusterTrials(ClosedOnExit):
    """The executor of a sweep with `ClusterExecutor` settings: each trial a task run on the cluster
    (the sweep flow runs on the settings' task runner)."""

    def __init__(self, train: TrainFn, store: SqlTrialStore, trial_time_limit: float | None = None) -> None:
        self._train, self._store, self._time_limit = train, store, trial_time_limit
        self._ended = EndedTrials()

    def submit(self, record: TrialRecord, spec: TrialSpec) -> TrialHandle:
        handle = TrialHandle(record=record, spec=spec, started=time.time())
        job = ClusterJob(self._train, self._store.url, spec, self._time_limit)
        future = trial_task.submit(record.number, record.config, job)
        settled = _Settled(self._store, spec, future)
        self._ended.watch(handle, _SettlingFuture(future, settled.settle), settled)
        return handle

    def wait_any(self, handles: Sequence[TrialHandle], timeout: float | None) -> list[TrialHandle]:
        return self._ended.wait_any(timeout)

    def cancel(self, handle: TrialHandle, reason: str) -> None:
        self._store.request_stop(handle.spec.trial_id, reason)


class _SettlingFuture:
    """A future whose done-callbacks run after `settle` has read the trial's end from the store."""

    def __init__(self, future: Any, settle: Callable[[], None]) -> None:
        self._future, self._settle = future, settle

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        def done(finished: Any) -> None:
            self._settle()
            fn(finished)

        self._future.add_done_callback(done)
