"""The embedded default: each trial is a Prefect task run; its work runs in a local thread or process.

The Prefect task is a thin waiter (it shows the trial in the UI with its state
and timing): it starts the training function on a runner, waits for it within
the trial's time limit, and commits how it ended to the store before it
returns. The parent loop hears of each end through a queue fed by the futures'
done-callbacks, so a freed slot is refilled at once, without polling.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.executors.base import ClosedOnExit, EndedTrials, TrialHandle
from prefect_hpo.executors.jobs import RunnerJob, trial_task
from prefect_hpo.executors.runners import ProcessRunner, Runner, ThreadRunner
from prefect_hpo.executors.settings import WorkerKind
from prefect_hpo.records import TrialRecord
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.trial import TrainFn, TrialSpec


class LocalTrials(ClosedOnExit):
    """The executor of a sweep without executor settings: trials as Prefect task runs on this machine,
    their work in `workers` ('processes' or 'threads'). A context manager: its end stops the workers."""

    def __init__(
        self,
        train: TrainFn,
        store: SqlTrialStore,
        *,
        workers: WorkerKind = "processes",
        slots: int = 1,
        trial_time_limit: float | None = None,
        runner: Runner | None = None,
        fresh: bool = False,
    ) -> None:
        """`runner`: one started earlier for these settings (`head_start`), which this executor then closes.
        `fresh`: each trial in a process of its own (trials that hold GPUs)."""
        if runner is not None:
            self._runner: Runner = runner
        elif workers == "processes":
            self._runner = ProcessRunner(train, store.url, slots, fresh=fresh)
        elif workers == "threads":
            self._runner = ThreadRunner(train, store)
        else:
            raise PrefectHPOError(f"executor workers {workers!r} is unknown; use 'processes' or 'threads'")
        self._store = store
        self._time_limit = trial_time_limit
        self._ended = EndedTrials()

    def submit(self, record: TrialRecord, spec: TrialSpec) -> TrialHandle:
        job = RunnerJob(spec, self._runner, self._store, self._time_limit)
        handle = TrialHandle(record=record, spec=spec, started=time.time(), detail={"job": job})
        self._ended.watch(handle, trial_task.submit(record.number, record.config, job), job)
        return handle

    def wait_any(self, handles: Sequence[TrialHandle], timeout: float | None) -> list[TrialHandle]:
        return self._ended.wait_any(timeout)

    def cancel(self, handle: TrialHandle, reason: str) -> None:
        job: RunnerJob = handle.detail["job"]
        job.cancel(reason)

    def close(self) -> None:
        self._runner.close()
