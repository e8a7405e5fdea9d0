"""The Prefect state a trial's task run (or flow run) ends in, named after how the trial ended.

A trial the scheduler stops early is a normal end, not an error: its run ends in a
`Completed` state named "Pruned", so the UI shows it apart from trials that ran to
their end, and Prefect logs no ERROR for it (a returned `Cancelled` state made the
worker's engine raise `CancelledRun` and log a traceback). A failed trial ends
`Failed` with its error's last line; a trial whose process died (retried as a new
attempt) ends `Crashed`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from prefect.client.schemas.objects import State
from prefect.states import Completed, Crashed, Failed

from prefect_hpo.records import TrialRecord, TrialState

#: The name of the Completed state of a trial that was stopped early.
PRUNED_STATE_NAME = "Pruned"
#: The name of the Completed state of a trial paused at a rung (promotion-form ASHA); it may run on later.
PAUSED_STATE_NAME = "Paused"
INTERRUPTED_STATE_NAME = "Interrupted"


def last_line(text: str | None, limit: int = 200) -> str:
    """The last non-empty line of an error (a traceback's exception line), cut to `limit` characters."""
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""


def trial_run_state(trial: TrialRecord, data: Any = None) -> State[Any]:
    """The final Prefect state for the run of `trial`, carrying `data` (the record, for a task)."""
    if trial.state == TrialState.PRUNED:
        return Completed(name=PRUNED_STATE_NAME, message=trial.reason or "stopped early", data=data)
    if trial.state == TrialState.PAUSED:
        return Completed(name=PAUSED_STATE_NAME, message=trial.reason, data=data)
    if trial.state == TrialState.FAIL:
        return Failed(message=last_line(trial.error) or trial.reason, data=data)
    if trial.state == TrialState.INTERRUPTED:  # Completed-typed: Prefect logs a Cancelled task at ERROR
        return Completed(name=INTERRUPTED_STATE_NAME, message=trial.reason, data=data)
    if trial.state == TrialState.FAIL_RECOVERABLE:
        return Crashed(message=f"runs again as a new attempt: {last_line(trial.error)}", data=data)
    return Completed(data=data)


class TrialEndsAsWarnings(logging.Filter):
    """Prefect's log lines about a trial's task run ending Failed or Crashed, made what they are in a sweep.

    A failed trial is that trial's end, and the sweep goes on; the sweep's own log line says so, with the
    error. Prefect logged two ERROR lines for it: "Task run failed with state: Failed(...)", with the whole
    trial record and a stray "NoneType: None" under it (Prefect logs it with `exc_info` when no exception
    is being handled), then "Finished in state Failed(...)". The first is dropped; the second, and the
    Crashed end of a trial whose process died (it runs again), are logged at WARNING. Only for the task
    named "trial", which only prefect_hpo's executors run."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "task_name", None) != TRIAL_TASK_NAME or record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        if message.startswith("Task run failed with state:"):
            return False
        if message.startswith(("Finished in state Failed", "Finished in state Crashed")):
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


#: The name of the task that runs (or launches) one trial, in every executor.
TRIAL_TASK_NAME = "trial"


@contextlib.contextmanager
def trial_ends_as_warnings() -> Iterator[None]:
    """While a sweep runs: its trials' failed ends logged once, at WARNING (`TrialEndsAsWarnings`)."""
    logger = logging.getLogger("prefect.task_runs")
    quieter = TrialEndsAsWarnings()
    logger.addFilter(quieter)
    try:
        yield
    finally:
        logger.removeFilter(quieter)
