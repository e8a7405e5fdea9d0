"""The strategy interface: propose configurations, learn from finished trials.

A strategy answers `ask()` with a value (syne-tune's `TrialSuggestion` is the model): a `Suggestion`
carries the configuration and, where the strategy has them, the trial whose checkpoint the new one
starts from and the steps it covers; `WAIT` says "nothing now, ask me after the next end"; `Exhausted`
(or None) says "nothing more, ever". Nothing the loop needs travels through attributes it reads
afterwards.

Optional abilities are declared as Protocols below (`ResumableStrategy`, `MultiFidelityStrategy`),
checked once with `isinstance` when the loop starts: a user's strategy is any object with `ask` and
`tell`, so abilities are structural, never a base class it must inherit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeAlias, runtime_checkable

from prefect_hpo.records import Config, TrialRecord


@dataclass(frozen=True)
class Suggestion:
    """One proposal of a strategy: a configuration, and where its trial starts from.

    `parent`, `resume_step`, `end_step` and `lineage` are for strategies whose trials go on from earlier
    ones (population-based training): the loop copies the parent's checkpoint folder to the new trial's,
    the trial starts at `resume_step` (`trial.resume_step`) and completes at `end_step`, and all of it is
    stored as the trial's lineage (`record.lineage`, with the extra facts in `lineage`: member,
    generation, perturbation). A plain proposal sets none of them.
    """

    config: Config
    #: the trial (number) whose checkpoint this one starts from
    parent: int | None = None
    #: the step the trial starts at (its parent's last step); None: from the start
    resume_step: int | None = None
    #: the step at which the trial completes (None: the budget's max_steps, or its own end)
    end_step: int | None = None
    #: True: the configuration may have run before and is meant to run again (a population member going
    #: on with its own configuration), so the loop does not take it for a duplicate
    may_repeat: bool = False
    #: further facts about where the proposal comes from, stored with the trial's lineage
    lineage: Mapping[str, Any] | None = None

    def stored_lineage(self) -> dict[str, Any] | None:
        """What the store keeps as the trial's lineage (None for a plain proposal)."""
        if self.parent is None and self.resume_step is None and self.end_step is None and self.lineage is None:
            return None
        stored: dict[str, Any] = {**(self.lineage or {}), "parent": self.parent, "start_step": self.resume_step or 0}
        if self.end_step is not None:
            stored["end_step"] = self.end_step
        return stored


class Wait:
    """What a strategy's `ask` returns when it has nothing to propose now but will once a running trial
    ends (population-based training between generations): the loop asks again after the next end."""

    def __repr__(self) -> str:
        return "WAIT"


WAIT: Final = Wait()


@dataclass(frozen=True)
class Exhausted:
    """What a strategy's `ask` returns when it will propose nothing more; `reason` is the sweep's end reason.

    A bare None means the same, with the reason "search space exhausted"."""

    reason: str = "search space exhausted"


#: Everything `ask` may answer. A bare configuration (a dict) is a `Suggestion` with nothing else to say,
#: so that a strategy written as "return a dict or None" keeps working.
Answer: TypeAlias = Suggestion | Config | Wait | Exhausted | None


@runtime_checkable
class Strategy(Protocol):
    """Proposes configurations one at a time and learns from every finished trial.

    `ask` returns a `Suggestion` (or a bare configuration), `WAIT`, or `Exhausted` / None when the
    strategy has nothing new to propose (a finished grid); the sweep then ends cleanly. `tell` receives
    every trial that ended, in the order they ended, including trials the strategy did not propose in
    this process (a resumed sweep replays the stored ones), so a strategy must accept those too.
    """

    def ask(self) -> Answer: ...

    def tell(self, trial: TrialRecord) -> None: ...


@runtime_checkable
class ResumableStrategy(Strategy, Protocol):
    """A strategy that rebuilds itself from the stored trials of a continued sweep in its own way.

    `restore` gets every stored trial, in number order, running ones included, once, before the
    first `ask`; a strategy without it is told each finished stored trial instead.
    """

    def restore(self, trials: Sequence[TrialRecord]) -> None: ...


@runtime_checkable
class MultiFidelityStrategy(Strategy, Protocol):
    """A strategy that also learns from scores at intermediate budgets (rungs), as BOHB does."""

    def tell_rung(self, config: Config, level: int, score: float) -> None: ...


def as_suggestion(answer: Suggestion | Config) -> Suggestion:
    """A strategy's proposal as a `Suggestion` (a bare configuration becomes a plain one)."""
    return answer if isinstance(answer, Suggestion) else Suggestion(answer)
