"""The embedded default: each trial is a Prefect task run; its work runs in a local thread or process.

The Prefect task is a thin waiter (it shows the trial in the UI with its state
and timing): it starts the training function on a runner, waits for it within
the trial's time limit, and commits how it ended to the store before it
returns. The parent loop hears of each end through a queue fed by the futures'
done-callbacks, so a freed slot is refilled at once, without polling.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.executors.base import EndedTrials, TrialHandle
from prefect_hpo.executors.runners import ProcessRunner, Runner, Running, ThreadRunner, TrialDied, TrialKilled
from prefect_hpo.records import Outcome, TrialRecord, TrialState
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.trial import TrainFn, TrialSpec

WorkerKind = Literal["processes", "threads"]


class _Job:
    """One trial's run, shared by the Prefect task that waits on it and the loop that may cancel it.

    A plain class on purpose: Prefect walks dataclass parameters of a task when it
    records the task's inputs, and there is nothing in here worth walking.
    """

    def __init__(self, spec: TrialSpec, runner: Runner, store: SqlTrialStore, time_limit: float | None) -> None:
        self.spec = spec
        self._runner = runner
        self._store = store
        self._time_limit = time_limit
        self._lock = threading.Lock()
        self._running: Running | None = None
        self._cancel_reason: str | None = None
        self.final: TrialRecord | None = None
        self.error: BaseException | None = None

    def execute(self, task_run_id: str | None) -> TrialRecord:
        try:
            self.final = self._store.finish_trial(self.spec.trial_id, self._outcome(), task_run_id=task_run_id)
            return self.final
        except BaseException as exc:
            self.error = exc
            raise

    def _outcome(self) -> Outcome:
        start = time.perf_counter()
        with self._lock:
            if self._cancel_reason is not None:
                return Outcome(state=TrialState.PRUNED, reason=self._cancel_reason)
            running = self._running = self._runner.start(self.spec, self._time_limit)
        try:
            return running.result()
        except TimeoutError:
            reason = f"ran past trial_time_limit={self._time_limit:g}s and was stopped"
            self._store.request_stop(self.spec.trial_id, reason)
            running.kill()
            return Outcome(
                state=TrialState.FAIL,
                error=f"TrialTimeout: {reason}",
                reason=reason,
                duration=time.perf_counter() - start,
            )
        except TrialKilled:
            return Outcome(
                state=TrialState.PRUNED,
                reason=self._cancel_reason or "stopped",
                duration=time.perf_counter() - start,
            )
        except TrialDied as exc:
            # Recoverable: a process killed from outside (the OOM killer, a person, a lost node) deserves
            # another attempt; the loop gives up with FAIL after max_retries, so a training function that
            # crashes its process every time costs max_retries + 1 runs, as under Ray Tune's max_failures.
            return Outcome(state=TrialState.FAIL_RECOVERABLE, error=str(exc), duration=time.perf_counter() - start)

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self._cancel_reason is not None:
                return
            self._cancel_reason = reason
            running = self._running
        self._store.request_stop(self.spec.trial_id, reason)
        if running is not None:
            running.kill()


@task(name="trial", task_run_name="trial-{number}", cache_policy=NO_CACHE, persist_result=False)
def trial_task(number: int, config: dict[str, object], job: _Job) -> TrialRecord:
    """One trial, as Prefect sees it: named after its number, its config as a parameter."""
    ctx = TaskRunContext.get()
    return job.execute(str(ctx.task_run.id) if ctx else None)


class LocalExecutor:
    """Trials as Prefect task runs on this machine, their work in `workers` ('processes' or 'threads')."""

    def __init__(
        self,
        train: TrainFn,
        store: SqlTrialStore,
        *,
        workers: WorkerKind = "processes",
        slots: int = 1,
        trial_time_limit: float | None = None,
    ) -> None:
        if workers == "processes":
            self._runner: Runner = ProcessRunner(train, store.url, slots)
        elif workers == "threads":
            self._runner = ThreadRunner(train, store)
        else:
            raise PrefectHPOError(f"executor workers {workers!r} is unknown; use 'processes' or 'threads'")
        self._store = store
        self._time_limit = trial_time_limit
        self._ended = EndedTrials()

    def submit(self, record: TrialRecord, spec: TrialSpec) -> TrialHandle:
        job = _Job(spec, self._runner, self._store, self._time_limit)
        handle = TrialHandle(record=record, spec=spec, started=time.time(), detail={"job": job})
        self._ended.watch(handle, trial_task.submit(record.number, record.config, job), job)
        return handle

    def wait_any(self, handles: Sequence[TrialHandle], timeout: float | None) -> list[TrialHandle]:
        return self._ended.wait_any(timeout)

    def cancel(self, handle: TrialHandle, reason: str) -> None:
        job: _Job = handle.detail["job"]
        job.cancel(reason)

    def close(self) -> None:
        self._runner.close()
