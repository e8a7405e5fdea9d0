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
    #: stopped by a Ctrl-C / SIGTERM of the sweep (or a cancel in Prefect): not the trial's fault, so the
    #: next run of the same sweep runs it again, from its last checkpoint, without counting a retry
    INTERRUPTED = "INTERRUPTED"
    #: ablator's name for a trial its scheduler stopped: the same state as PRUNED (an alias).
    PRUNED_POOR_PERFORMANCE = "PRUNED"

    @property
    def is_finished(self) -> bool:
        """True for every state a trial does not leave by itself."""
        return self not in (TrialState.WAITING, TrialState.RUNNING, TrialState.PAUSED, TrialState.INTERRUPTED)

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
        {
            TrialState.COMPLETE,
            TrialState.PRUNED,
            TrialState.FAIL,
            TrialState.FAIL_RECOVERABLE,
            TrialState.PAUSED,
            TrialState.INTERRUPTED,
        }
    ),
    # promotion-form ASHA: a paused trial resumes (a new attempt) or is left behind at the end
    TrialState.PAUSED: frozenset({TrialState.RUNNING, TrialState.PRUNED}),
    TrialState.FAIL_RECOVERABLE: frozenset({TrialState.RUNNING, TrialState.FAIL}),
    TrialState.INTERRUPTED: frozenset({TrialState.RUNNING}),
}

#: How a stop request says the sweep was interrupted (rather than the trial stopped by its scheduler): the
#: request travels to the trial through the store's one reason column, wherever the trial runs.
_INTERRUPT_MARK = "interrupted: "


def interrupt_request(reason: str) -> str:
    """The stop request that asks a running trial to end INTERRUPTED (resumable) rather than PRUNED."""
    return _INTERRUPT_MARK + reason


def is_interrupt_request(request: str | None) -> bool:
    """True for a stop request made by `interrupt_request`."""
    return request is not None and request.startswith(_INTERRUPT_MARK)


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the store holds it (`id` is the row's key, `number` its place in the sweep)."""

    id: int
    sweep_id: int
    number: int
    config: Config
    config_hash: str
    state: TrialState
    #: how many times the trial has run (or runs now), interrupted and failed attempts included
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
    #: the attempts that ended FAIL_RECOVERABLE (their process died, the store failed under them): what
    #: `max_retries` limits. An attempt cut off by the sweep's interruption or its parent's death is none.
    failures: int = 0
    #: the GPUs its last attempt held on its host (as CUDA names them), and its BLAS/OpenMP thread count
    devices: tuple[str, ...] = ()
    cpu_threads: int | None = None

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
    #: what the attempt held on its host: its GPUs and its thread count (where it was placed)
    devices: tuple[str, ...] = ()
    cpu_threads: int | None = None
