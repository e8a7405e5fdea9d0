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

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.task_runners import TaskRunner

from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.executors.base import EndedTrials, TrialHandle
from prefect_hpo.executors.local import _Job
from prefect_hpo.executors.runners import ThreadRunner
from prefect_hpo.records import Outcome, TrialRecord, TrialState
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.trial import TrainFn, TrialSpec


@dataclass(frozen=True)
class ClusterExecutor:
    """Where trials run: the Prefect task runner of an existing Dask or Ray cluster.

    Build one with `ClusterExecutor.dask(address=...)` / `ClusterExecutor.ray(address=...)`,
    or pass any Prefect task runner. The training function and the store must be
    reachable from the cluster's workers (cloudpickle sends the function; use a
    store every worker reaches, PostgreSQL across machines).
    """

    task_runner: TaskRunner[Any]
    name: str = "cluster"
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def dask(cls, address: str | None = None, **cluster_kwargs: Any) -> ClusterExecutor:
        """Trials on the Dask cluster at `address`, or on a temporary local cluster built from `cluster_kwargs`
        (e.g. `n_workers=2, threads_per_worker=1`) when no address is given. Needs `prefect-hpo[dask]`."""
        try:
            from prefect_dask.task_runners import DaskTaskRunner
        except ImportError:
            raise PrefectHPOError(
                "executor: the Dask executor needs prefect-dask; install it with `pip install 'prefect-hpo[dask]'`"
            ) from None
        runner = DaskTaskRunner(address=address) if address else DaskTaskRunner(cluster_kwargs=cluster_kwargs)
        return cls(runner, "dask", {"address": address, **cluster_kwargs})

    @classmethod
    def ray(cls, address: str | None = None, **init_kwargs: Any) -> ClusterExecutor:
        """Trials on the Ray cluster at `address` (default: a local Ray started for the sweep).
        Needs `prefect-hpo[ray]`."""
        try:
            from prefect_ray.task_runners import RayTaskRunner
        except ImportError:
            raise PrefectHPOError(
                "executor: the Ray executor needs prefect-ray; install it with `pip install 'prefect-hpo[ray]'`"
            ) from None
        return cls(RayTaskRunner(address=address, init_kwargs=init_kwargs or None), "ray", {"address": address})


#: One open store per storage URL in each cluster worker process: opening one costs a connection
#: pool and a schema check, which a worker running many trials should pay once. Never used in the parent.
_WORKER_STORES: dict[str, SqlTrialStore] = {}
_WORKER_STORES_LOCK = threading.Lock()


def _worker_store(url: str) -> SqlTrialStore:
    with _WORKER_STORES_LOCK:
        store = _WORKER_STORES.get(url)
        if store is None:
            store = _WORKER_STORES[url] = SqlTrialStore(url)
        return store


@task(name="trial", task_run_name="trial-{number}", cache_policy=NO_CACHE, persist_result=False, retries=0)
def cluster_trial_task(
    number: int, config: dict[str, object], train: TrainFn, storage: str, spec: TrialSpec, time_limit: float | None
) -> str:
    """One trial on a cluster worker: run it and commit its end to the store; returns the state's name."""
    store = _worker_store(storage)
    current = store.trial(spec.sweep_id, number)
    if current.state != TrialState.RUNNING or current.attempt != spec.attempt:
        return current.state.value  # the cluster ran this task again after its end was recorded
    stop = store.stop_request(spec.trial_id)
    ctx = TaskRunContext.get()
    task_run_id = str(ctx.task_run.id) if ctx else None
    if stop is not None:  # stopped while it waited for a cluster slot
        outcome = Outcome(TrialState.PRUNED, reason=stop)
        return store.finish_trial(spec.trial_id, outcome, task_run_id=task_run_id).state.value
    if task_run_id is not None and current.task_run_id == task_run_id:
        # the cluster runs a task again when the worker running it died (Dask reschedules it): this
        # attempt was lost with that worker, so record it as such and let the sweep retry it
        lost = Outcome(TrialState.FAIL_RECOVERABLE, error="its cluster worker was lost mid-trial")
        return store.finish_trial(spec.trial_id, lost).state.value
    if task_run_id is not None:
        store.set_task_run(spec.trial_id, task_run_id)
    # the training function runs in a thread of this worker, so the time limit can be watched here
    job = _Job(spec, ThreadRunner(train, store), store, time_limit)
    return job.execute(task_run_id).state.value


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


class ClusterTrials:
    """The running side of a `ClusterExecutor` inside one sweep (the sweep flow runs on its task runner)."""

    def __init__(self, train: TrainFn, store: SqlTrialStore, trial_time_limit: float | None = None) -> None:
        self._train, self._store, self._time_limit = train, store, trial_time_limit
        self._ended = EndedTrials()

    def submit(self, record: TrialRecord, spec: TrialSpec) -> TrialHandle:
        handle = TrialHandle(record=record, spec=spec, started=time.time())
        future = cluster_trial_task.submit(
            record.number, record.config, self._train, self._store.url, spec, self._time_limit
        )
        settled = _Settled(self._store, spec, future)
        self._ended.watch(handle, _SettlingFuture(future, settled.settle), settled)
        return handle

    def wait_any(self, handles: Sequence[TrialHandle], timeout: float | None) -> list[TrialHandle]:
        return self._ended.wait_any(timeout)

    def cancel(self, handle: TrialHandle, reason: str) -> None:
        self._store.request_stop(handle.spec.trial_id, reason)

    def close(self) -> None:
        return None


class _SettlingFuture:
    """A future whose done-callbacks run after `settle` has read the trial's end from the store."""

    def __init__(self, future: Any, settle: Callable[[], None]) -> None:
        self._future, self._settle = future, settle

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        def done(finished: Any) -> None:
            self._settle()
            fn(finished)

        self._future.add_done_callback(done)
