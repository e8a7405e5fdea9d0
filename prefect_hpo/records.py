"""Plain data that travels between the loop, the store, the strategies and the executors."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Config = dict[str, Any]
#: A user's check of a configuration before it runs: True (or None) lets it run; False, or a string
#: saying why, rejects it (the trial is stored PRUNED_INVALID).
Constraint = Callable[[Config], "bool | str | None"]
"""One configuration: parameter name -> JSON-serializable value."""


class TrialState(enum.StrEnum):
    """Where a trial stands. The names follow Optuna's and ablator's meanings."""

    WAITING = "WAITING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"
    FAIL_RECOVERABLE = "FAIL_RECOVERABLE"
    PRUNED_INVALID = "PRUNED_INVALID"
    PRUNED_DUPLICATE = "PRUNED_DUPLICATE"
    #: ablator's name for a trial its scheduler stopped: the same state as PRUNED (an alias).
    PRUNED_POOR_PERFORMANCE = "PRUNED"

    @property
    def is_finished(self) -> bool:
        """True for every state a trial does not leave by itself."""
        return self not in (TrialState.WAITING, TrialState.RUNNING, TrialState.PAUSED)

    @property
    def is_failure(self) -> bool:
        """True for the states that count against `max_failed_trials`."""
        return self in (TrialState.FAIL, TrialState.FAIL_RECOVERABLE)


#: The transitions the store accepts; anything else is a bug and is refused.
ALLOWED_TRANSITIONS: dict[TrialState, frozenset[TrialState]] = {
    TrialState.WAITING: frozenset(
        {TrialState.RUNNING, TrialState.PRUNED_INVALID, TrialState.PRUNED_DUPLICATE, TrialState.FAIL}
    ),
    TrialState.RUNNING: frozenset(
        {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL_RECOVERABLE, TrialState.PAUSED}
    ),
    # promotion-form ASHA: a paused trial resumes (a new attempt) or is left behind at the end
    TrialState.PAUSED: frozenset({TrialState.RUNNING, TrialState.PRUNED}),
    TrialState.FAIL_RECOVERABLE: frozenset({TrialState.RUNNING, TrialState.FAIL}),
}


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the store holds it (`id` is the row's key, `number` its place in the sweep)."""

    id: int
    sweep_id: int
    number: int
    config: Config
    config_hash: str
    state: TrialState
    attempt: int = 1
    values: tuple[float, ...] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    last_step: int | None = None
    error: str | None = None
    reason: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration: float | None = None
    worker: str | None = None
    task_run_id: str | None = None
    duplicate_of: int | None = None
    stop_requested: str | None = None
    bracket: int = 0
    #: population-based training: member, generation, parent trial, steps, perturbation
    lineage: dict[str, Any] | None = None

    @property
    def value(self) -> float | None:
        """The first objective's value, or None while there is none."""
        return self.values[0] if self.values else None


@dataclass(frozen=True)
class Report:
    """One intermediate report: a step and the metrics a trial reported at it."""

    number: int
    step: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class Outcome:
    """What running a training function produced, before the store records it."""

    state: TrialState
    values: tuple[float, ...] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    last_step: int | None = None
    error: str | None = None
    reason: str | None = None
    duration: float = 0.0
    worker: str | None = None
