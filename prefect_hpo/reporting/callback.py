"""The user's `on_trial_complete(trial_number, value, step, config, best_trial_number)` as a reporter."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

from prefect_hpo.budget import BudgetStatus
from prefect_hpo.objective import Objective
from prefect_hpo.records import Config, TrialRecord, TrialState

TrialCallback = Callable[[int, float | None, int | None, Config, int | None], None]
"""`on_trial_complete(trial_number, value, step, config, best_trial_number)`."""

_log = logging.getLogger("prefect_hpo.controller")


class TrialCallbackReporter:
    """Calls `on_trial_complete` as each trial ends (the sweep's reporter chain runs it in the sweep's thread)."""

    def __init__(self, callback: TrialCallback, objectives: Sequence[Objective]) -> None:
        self._callback = callback
        self._objective = objectives[0]
        self._best: tuple[float, int] | None = None

    def trial_started(self, trial: TrialRecord) -> None:
        return None

    def trial_ended(self, trial: TrialRecord, status: BudgetStatus) -> None:
        if not trial.state.is_finished:
            return
        value = trial.value
        if trial.state == TrialState.COMPLETE and value is not None and self._is_new_best(value):
            self._best = (value, trial.number)
        best = None if self._best is None else self._best[1]
        try:
            self._callback(trial.number, value, trial.last_step, dict(trial.config), best)
        except Exception:  # noqa: BLE001 - a user's callback must not end the sweep; its error is logged
            _log.exception("on_trial_complete raised for trial %d; the sweep goes on", trial.number)

    def sweep_ended(self, status: BudgetStatus, reason: str) -> None:
        return None

    def _is_new_best(self, value: float) -> bool:
        """Whether a completed trial's value is finite and better than the best so far."""
        return math.isfinite(value) and (self._best is None or self._objective.better(value, self._best[0]))
