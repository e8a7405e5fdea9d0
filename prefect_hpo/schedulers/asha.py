"""Asynchronous successive halving (ASHA) and asynchronous Hyperband, stopping form.

Rung levels are `grace_period * reduction_factor**k` below `max_t`, or `rung_levels`
given explicitly. When a trial's report reaches a rung (the first report at or past
the level; a report that skips steps crosses every rung it passes), its score is
recorded there and it continues only if it is in the top 1/reduction_factor of the
scores recorded at that rung so far, in store order (Li et al., 2018; Optuna's
SuccessiveHalvingPruner applies the same rule).

In promotion form (ASHA proper), a trial instead pauses at every rung it reaches,
with a checkpoint; when a slot frees, the loop asks `next_promotion` for the best
paused trial that is in the top 1/reduction_factor of its rung, resumes it from its
checkpoint towards the next rung, and starts a new configuration only when none can
be promoted.

Hyperband runs `brackets` copies of that ladder: bracket b starts at the b-th rung,
so higher brackets stop trials later. Each new trial joins a bracket drawn with the
weights of Hyperband's brackets (Li et al., 2017), deterministically from the seed
and the trial number. Rungs are compared per bracket, or across brackets when
`rung_system="shared"`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.schedulers.base import (
    Action,
    Decision,
    PromotionStore,
    ReportEvent,
    SchedulerStore,
    SettingsState,
    asha_keeps,
)


@dataclass(frozen=True)
class AsyncHyperbandScheduler(SettingsState):
    """ASHA with `brackets=1`, asynchronous Hyperband with more.

    A `PromotingScheduler` (so also a `RungScheduler`, its `levels` what BOHB learns at) and a
    `ClockedScheduler` (`time_attr`), by the Protocols of `schedulers.base`."""

    max_t: int | None = 81
    grace_period: int = 1
    reduction_factor: float = 3
    rung_levels: tuple[int, ...] | None = None
    brackets: int = 1
    rung_system: Literal["per_bracket", "shared"] = "per_bracket"
    seed: int = 0
    mode: Literal["stopping", "promotion"] = "stopping"
    time_attr: str | None = None
    levels: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.reduction_factor <= 1:
            raise PrefectHPOError(f"scheduler: reduction_factor must be > 1, got {self.reduction_factor}")
        if self.grace_period < 1:
            raise PrefectHPOError(f"scheduler: grace_period must be >= 1, got {self.grace_period}")
        if self.rung_levels is not None:
            levels = tuple(sorted(set(int(v) for v in self.rung_levels)))
            if not levels or levels[0] < 1:
                raise PrefectHPOError(f"scheduler: rung_levels must be positive steps, got {self.rung_levels}")
        else:
            if self.max_t is None:
                raise PrefectHPOError("scheduler: give max_t (the most steps a trial runs) or explicit rung_levels")
            levels, level = (), float(self.grace_period)
            while round(level) < self.max_t:
                levels += (round(level),)
                level *= self.reduction_factor
            if not levels:
                raise PrefectHPOError(
                    f"scheduler: grace_period={self.grace_period} leaves no rung below max_t={self.max_t}; "
                    "lower grace_period or raise max_t"
                )
        if self.max_t is not None:
            levels = tuple(v for v in levels if v < self.max_t)
        if not 1 <= self.brackets <= len(levels):
            raise PrefectHPOError(
                f"scheduler: brackets must be between 1 and the number of rungs ({len(levels)}), got {self.brackets}"
            )
        if self.rung_system not in ("per_bracket", "shared"):
            raise PrefectHPOError(f"scheduler: rung_system must be 'per_bracket' or 'shared', got {self.rung_system!r}")
        if self.mode not in ("stopping", "promotion"):
            raise PrefectHPOError(f"scheduler: mode must be 'stopping' or 'promotion', got {self.mode!r}")
        if self.time_attr is not None and self.mode == "promotion":
            raise PrefectHPOError(
                "scheduler: time_attr works with mode='stopping'; promotion resumes trials at report steps, "
                "so drop time_attr and report the resource as the step"
            )
        object.__setattr__(self, "levels", levels)

    @property
    def promotes(self) -> bool:
        return self.mode == "promotion"

    def bracket_levels(self, bracket: int) -> tuple[int, ...]:
        return self.levels[bracket:]

    def bracket_for(self, number: int) -> int:
        if self.brackets == 1:
            return 0
        top = self.brackets - 1
        # bracket b starts b rungs late: Hyperband's bracket s = top - b, holding ceil((top+1)/(s+1)) * eta**s trials
        weights = [(top + 1) / (top - b + 1) * self.reduction_factor ** (top - b) for b in range(self.brackets)]
        return random.Random(self.seed * 1_000_003 + number).choices(range(self.brackets), weights=weights)[0]

    def on_report(self, event: ReportEvent, store: SchedulerStore) -> Decision:
        previous = -math.inf if event.previous_step is None else event.previous_step
        rung_bracket = 0 if self.rung_system == "shared" else event.bracket
        for rung, level in enumerate(self.bracket_levels(event.bracket)):
            if not previous < level <= event.step:
                continue
            competing = store.record_rung(event.sweep_id, event.trial_id, rung_bracket, level, event.score)
            if math.isnan(event.score):
                return Decision(Action.STOP, f"rung {rung} (step {level}): the objective is NaN, the worst value")
            if self.promotes:
                reached = max(v for v in self.bracket_levels(event.bracket) if v <= event.step)
                if level == reached:
                    return Decision(Action.PAUSE, f"paused at rung {rung} (step {level}) of bracket {event.bracket}")
                continue
            if not asha_keeps(event.score, competing, self.reduction_factor):
                return Decision(
                    Action.STOP,
                    f"rung {rung} (step {level}) of bracket {event.bracket}: not in the top "
                    f"1/{self.reduction_factor:g} of {len(competing)} trials",
                )
        return Decision.go_on()

    def next_promotion(self, store: PromotionStore, sweep_id: int) -> tuple[int, int] | None:
        """(trial number, rung level) of the paused trial to resume next, or None.

        A paused trial is promotable when it is in the top 1/reduction_factor of every
        score recorded at its rung; among those, the highest rung wins, then the best
        score, then the lowest trial number (so the choice is deterministic).
        """
        best: tuple[int, float, int, int] | None = None
        for number, rung_bracket, level, score in store.paused_at_rungs(sweep_id):
            if not asha_keeps(score, store.rung_scores(sweep_id, rung_bracket, level), self.reduction_factor):
                continue
            key = (-level, score, number, level)
            if best is None or key < best:
                best = key
        return None if best is None else (best[2], best[3])


def ASHAScheduler(
    max_t: int | None = 81,
    grace_period: int = 1,
    reduction_factor: float = 3,
    rung_levels: tuple[int, ...] | None = None,
    mode: Literal["stopping", "promotion"] = "stopping",
    time_attr: str | None = None,
) -> AsyncHyperbandScheduler:
    """Asynchronous successive halving: one bracket, stopping or promotion form."""
    return AsyncHyperbandScheduler(
        max_t, grace_period, reduction_factor, rung_levels, brackets=1, mode=mode, time_attr=time_attr
    )


def HyperbandScheduler(
    max_t: int | None = 81,
    grace_period: int = 1,
    reduction_factor: float = 3,
    rung_levels: tuple[int, ...] | None = None,
    brackets: int | None = None,
    rung_system: Literal["per_bracket", "shared"] = "per_bracket",
    seed: int = 0,
    mode: Literal["stopping", "promotion"] = "stopping",
    time_attr: str | None = None,
) -> AsyncHyperbandScheduler:
    """Asynchronous Hyperband: as many brackets as rungs unless `brackets` says fewer."""
    one = AsyncHyperbandScheduler(max_t, grace_period, reduction_factor, rung_levels, brackets=1)
    return AsyncHyperbandScheduler(
        max_t,
        grace_period,
        reduction_factor,
        rung_levels,
        brackets or len(one.levels),
        rung_system,
        seed,
        mode,
        time_attr,
    )
