"""What hears of a sweep's progress: the `Reporter` protocol, and `Reporters`, several heard as one.

The loop tells its one reporter of each trial's start and end and of the sweep's end; the sweep flow
chains the reporters it wants (the terminal, Prefect artifacts, the user's `on_trial_complete`, the
top-k checkpoint keeper) into one with `Reporters`.
"""

from __future__ import annotations

from typing import Protocol

from prefect_hpo.budget import BudgetStatus
from prefect_hpo.records import TrialRecord


class Reporter(Protocol):
    """Hears of the sweep's progress (terminal bar, logs, artifacts, callbacks)."""

    def trial_started(self, trial: TrialRecord) -> None: ...

    def trial_ended(self, trial: TrialRecord, status: BudgetStatus) -> None: ...

    def sweep_ended(self, status: BudgetStatus, reason: str) -> None: ...


class Reporters:
    """Several reporters heard as one, in the order given (the terminal and the UI)."""

    def __init__(self, *reporters: Reporter) -> None:
        self._reporters = reporters

    def trial_started(self, trial: TrialRecord) -> None:
        for reporter in self._reporters:
            reporter.trial_started(trial)

    def trial_ended(self, trial: TrialRecord, status: BudgetStatus) -> None:
        for reporter in self._reporters:
            reporter.trial_ended(trial, status)

    def sweep_ended(self, status: BudgetStatus, reason: str) -> None:
        for reporter in self._reporters:
            reporter.sweep_ended(status, reason)
