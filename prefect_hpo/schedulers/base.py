"""The scheduler interface: at each report, continue or stop; rules are pure functions of what they are shown.

A scheduler runs inside the trial (in whatever process or machine runs it) and
decides from what the trial store holds, never from the parent's memory. What it
reads and writes goes through `SchedulerStore`, a narrow view of the store, so
the same decision is made wherever the trial runs. The rules themselves
(`asha_keeps`, `median_stops`) are pure functions, tested on hand-computed
sequences.

Optional abilities are declared as Protocols (`RungScheduler`, `PromotingScheduler`, `ClockedScheduler`)
and checked with `isinstance` where they are used, once per sweep or per trial: a user's scheduler is
any object with the three members of `Scheduler`, so an ability is structural, not a base class to
inherit, and nothing is probed with `getattr`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable


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


@runtime_checkable
class RungScheduler(Scheduler, Protocol):
    """A multi-fidelity scheduler: it compares trials at rung levels, which a strategy such as BOHB
    learns from (the loop passes it each rung score the store receives)."""

    @property
    def levels(self) -> tuple[int, ...]:
        """The rung levels (steps), lowest first."""
        ...


class PromotionStore(Protocol):
    """What `PromotingScheduler.next_promotion` reads from the trial store."""

    def paused_at_rungs(self, sweep_id: int) -> list[tuple[int, int, int, float]]:
        """(trial number, bracket, highest rung level reached, score there) of every PAUSED trial."""
        ...

    def rung_scores(self, sweep_id: int, bracket: int, level: int) -> list[float]:
        """The scores recorded at rung `level` of `bracket`, in store order."""
        ...


@runtime_checkable
class PromotingScheduler(RungScheduler, Protocol):
    """A scheduler that may pause trials at its rungs and resume the best one when a slot frees (ASHA's
    promotion form): the loop asks `next_promotion` before it starts a new configuration."""

    @property
    def promotes(self) -> bool:
        """Whether this one pauses and promotes trials (ASHA with mode="promotion"), or only stops them."""
        ...

    def next_promotion(self, store: PromotionStore, sweep_id: int) -> tuple[int, int] | None:
        """(trial number, rung level) of the paused trial to resume next, or None."""
        ...


@runtime_checkable
class ClockedScheduler(Scheduler, Protocol):
    """A scheduler that may count a trial's progress in a reported metric rather than its report steps."""

    @property
    def time_attr(self) -> str | None:
        """The metric it counts progress in (e.g. "epoch" while steps count batches), or None: the step."""
        ...


def scheduler_clock(scheduler: Scheduler | None) -> str | None:
    """The metric `scheduler` counts a trial's progress in, or None when it counts report steps."""
    if scheduler is None:  # no early stopping, the common case: skip the Protocol check (~50 us)
        return None
    return scheduler.time_attr if isinstance(scheduler, ClockedScheduler) else None


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

    Only for frozen dataclasses (the annotation below says so to the type checker).
    """

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __post_init__(self) -> None:
        """Settings derived from the fields (rung levels) and their checks; none here."""

    def state_dict(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        return {"class": type(self).__name__, **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("class") != type(self).__name__:
            raise ValueError(f"not a {type(self).__name__}'s state (class {state.get('class')!r})")
        for f in dataclasses.fields(self):
            if f.init and f.name in state:
                value = state[f.name]
                object.__setattr__(self, f.name, tuple(value) if isinstance(value, list) else value)  # frozen
        self.__post_init__()  # settings derived from these (rung levels) and their checks
