"""The strategy interface: propose configurations, learn from finished trials."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol, runtime_checkable

from prefect_hpo.records import Config, TrialRecord


class Wait:
    """What a strategy's `ask` returns when it has nothing to propose now but will once a running trial
    ends (population-based training between generations): the loop asks again after the next end."""

    def __repr__(self) -> str:
        return "WAIT"


WAIT: Final = Wait()


@runtime_checkable
class Strategy(Protocol):
    """Proposes configurations one at a time and learns from every finished trial.

    `ask` returns None when the strategy has nothing new to propose (a finished
    grid); the sweep then ends cleanly. `tell` receives every trial that ended,
    in the order they ended, including trials the strategy did not propose in
    this process (a resumed sweep replays the stored ones), so a strategy must
    accept those too.
    """

    def ask(self) -> Config | Wait | None: ...

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
