"""The scheduler interface: at each report, continue or stop; rules are pure functions of what they are shown.

A scheduler runs inside the trial (in whatever process or machine runs it) and
decides from what the trial store holds, never from the parent's memory. What it
reads and writes goes through `SchedulerStore`, a narrow view of the store, so
the same decision is made wherever the trial runs. The rules themselves
(`asha_keeps`, `median_stops`) are pure functions, tested on hand-computed
sequences.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


class Action(enum.StrEnum):
    CONTINUE = "CONTINUE"
    STOP = "STOP"
    PAUSE = "PAUSE"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""

    @classmethod
    def go_on(cls) -> Decision:
        return cls(Action.CONTINUE)


@dataclass(frozen=True)
class ReportEvent:
    """One report as a scheduler sees it, in 'lower is better' form (NaN stays NaN).

    `score` is the value the objective's mode judges at this step (the last value, or
    the best so far for `*_global` modes); `best` is the best score reported so far.
    `step` is the scheduler's clock: the report's step, or the reported value of the
    scheduler's `time_attr` metric (e.g. epochs while steps count batches).
    """

    sweep_id: int
    trial_id: int
    number: int
    bracket: int
    step: float
    score: float
    best: float
    previous_step: float | None


class SchedulerStore(Protocol):
    """What a scheduler may ask of the trial store."""

    def record_rung(self, sweep_id: int, trial_id: int, bracket: int, level: int, score: float) -> list[float]:
        """Store this trial's score at rung `level` of `bracket`; return the scores recorded there so far,
        in store order, up to and including this one (NaN where a trial reported NaN)."""
        ...

    def running_averages(self, sweep_id: int, trial_id: int, step: float) -> list[float]:
        """Mean reported score of every other trial of the sweep over its reports at steps <= `step`."""
        ...


@runtime_checkable
class Scheduler(Protocol):
    """Early-stopping rule. Plain, picklable data: it travels to wherever the trial runs."""

    @property
    def max_t(self) -> int | None:
        """The most steps a trial runs (it completes there), or None."""
        ...

    def bracket_for(self, number: int) -> int:
        """The bracket a new trial joins (0 for single-bracket schedulers); deterministic in `number`."""
        ...

    def on_report(self, event: ReportEvent, store: SchedulerStore) -> Decision: ...


def worst_last(scores: Sequence[float]) -> list[float]:
    """Scores sorted best (lowest) first, NaN counted as the worst."""
    return sorted((math.inf if math.isnan(s) else s) for s in scores)


def asha_keeps(score: float, competing: Sequence[float], reduction_factor: float) -> bool:
    """Whether a trial with `score` is in the top 1/reduction_factor of `competing` (which includes it).

    With fewer than `reduction_factor` trials at the rung it must be the best so far,
    as in Optuna's SuccessiveHalvingPruner; ties are kept.
    """
    if math.isnan(score):
        return False
    ranked = worst_last(competing)
    keep = max(1, int(len(ranked) // reduction_factor))
    return score <= ranked[keep - 1]


def median_stops(best: float, others: Sequence[float], min_samples: int) -> bool:
    """The median stopping rule: stop when `best` is worse than the median of the others' running averages."""
    finite = sorted(v for v in others if not math.isnan(v))
    if len(finite) < min_samples:
        return False
    mid = len(finite) // 2
    median = finite[mid] if len(finite) % 2 else (finite[mid - 1] + finite[mid]) / 2
    return math.isnan(best) or best > median


class SettingsState:
    """`state_dict()` / `load_state_dict()` for the built-in schedulers.

    Their settings are all the state they hold in memory: what they decide from (each trial's reports,
    who reached which rung and in what order) lives in the trial store, so a scheduler moved to another
    machine with these settings and the same store decides exactly as it would have.
    """

    def state_dict(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}  # type: ignore[arg-type]
        return {"class": type(self).__name__, **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("class") != type(self).__name__:
            raise ValueError(f"not a {type(self).__name__}'s state (class {state.get('class')!r})")
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.init and f.name in state:
                value = state[f.name]
                object.__setattr__(self, f.name, tuple(value) if isinstance(value, list) else value)  # frozen
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:  # settings derived from these (rung levels) and their checks
            post_init()
