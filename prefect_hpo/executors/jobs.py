"""One trial's job, and the one Prefect task every executor runs it in.

A job is what runs one attempt and commits how it ended to the store: `RunnerJob` runs the training
function on a thread or a process within the trial's time limit (the local executor, and each
cluster worker); `WorkPoolJob` launches and watches a flow run; `ClusterJob` opens the store on a
cluster worker first. `trial_task` is the task that shows any of them in the UI: named after the
trial's number, its config as a parameter, its end as a state of its own ("Pruned" for a trial
stopped early, Failed for a failed one).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Protocol

from prefect import State, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from prefect_hpo.executors.run_states import TRIAL_TASK_NAME, trial_run_state
from prefect_hpo.executors.runners import Runner, Running, TrialDied, TrialKilled
from prefect_hpo.records import Outcome, TrialRecord, TrialState, interrupt_request, is_interrupt_request
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.trial import TrialSpec


class TrialJob(Protocol):
    """Runs one attempt to its end and returns that end as the store holds it."""

    def execute(self, task_run_id: str | None) -> TrialRecord: ...


@task(name=TRIAL_TASK_NAME, task_run_name="trial-{number}", cache_policy=NO_CACHE, persist_result=False, retries=0)
def trial_task(number: int, config: dict[str, object], job: TrialJob) -> State[TrialRecord]:
    """One trial, as Prefect sees it. No retries: a job that ends without recording its trial leaves it
    FAIL_RECOVERABLE, and the sweep runs it again as a new attempt."""
    ctx = TaskRunContext.get()
    record = job.execute(str(ctx.task_run.id) if ctx else None)
    return trial_run_state(record, data=record)


class RunnerJob:
    """One trial's run on a `Runner`, shared by the task that waits on it and the loop that may cancel it.

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
        """Run the attempt and return its end as stored: recorded by the worker process itself, or here.
        The first end recorded wins (a worker's result that came just before its time limit or a cancel)."""
        try:
            ended = self._outcome(task_run_id)
            if isinstance(ended, TrialRecord):
                self.final = ended
            else:
                if not ended.devices and ended.cpu_threads is None:  # an end seen from here: what it held
                    ended = dataclasses.replace(ended, devices=self.spec.devices, cpu_threads=self.spec.cpu_threads)
                self.final = self._store.end_attempt(
                    self.spec.trial_id, self.spec.attempt, ended, task_run_id=task_run_id
                )
            return self.final
        except BaseException as exc:
            self.error = exc
            raise

    def _outcome(self, task_run_id: str | None) -> Outcome | TrialRecord:
        start = time.perf_counter()
        with self._lock:
            if self._cancel_reason is not None:
                return self._cancelled(0.0)
            running = self._running = self._runner.start(self.spec, self._time_limit, task_run_id)
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
            return self._cancelled(time.perf_counter() - start)
        except TrialDied as exc:
            # Recoverable: a process killed from outside (the OOM killer, a person, a lost node) deserves
            # another attempt; the loop gives up with FAIL after max_retries, so a training function that
            # crashes its process every time costs max_retries + 1 runs, as under Ray Tune's max_failures.
            return Outcome(state=TrialState.FAIL_RECOVERABLE, error=str(exc), duration=time.perf_counter() - start)

    def _cancelled(self, duration: float) -> Outcome:
        """A trial the sweep stopped: PRUNED by its scheduler or a stop, INTERRUPTED by a Ctrl-C (runs again),
        or by the sweep's end without a stop (its loop failed and the runner closed): it runs again too."""
        reason = self._cancel_reason or interrupt_request("the sweep ended while this trial ran")
        state = TrialState.INTERRUPTED if is_interrupt_request(reason) else TrialState.PRUNED
        return Outcome(state=state, reason=reason, duration=duration)

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self._cancel_reason is not None:
                return
            self._cancel_reason = reason
            running = self._running
        self._store.request_stop(self.spec.trial_id, reason)
        if running is not None:
            running.kill()
