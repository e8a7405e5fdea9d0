"""What the search loop asks of the trial store: a narrow Protocol, so that the loop runs on any store.

`SqlTrialStore` is the store a sweep uses; the loop's tests use a small in-memory one
(tests/test_loop.py). The contract, in words:

- The loop holds the sweep's lease: no other process creates trials of this sweep or resumes them
  while it runs. Trials' own processes (or the executor) end attempts and add reports and rung
  scores concurrently; every read returns what was committed before it.
- Every write is committed when the call returns, and every state change goes through the store's
  transition table (`records.ALLOWED_TRANSITIONS`); a refused transition raises `StoreError`.
- Returned records are snapshots (frozen `TrialRecord`s), never live views.
- An executor commits a trial's end before the loop hears of it, so what the loop counts is a cache of
  what the store already says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from prefect_hpo.budget import Usage
from prefect_hpo.records import Config, Outcome, TrialRecord, TrialState
from prefect_hpo.schedulers.base import PromotionStore


class LoopStore(PromotionStore, Protocol):
    """The store calls the search loop makes (and, through `PromotionStore`, a promoting scheduler's)."""

    def trials(self, sweep_id: int, states: Iterable[TrialState] | None = None) -> list[TrialRecord]:
        """The sweep's trials in number order, only those in `states` when given."""
        ...

    def trial(self, sweep_id: int, number: int) -> TrialRecord:
        """Trial `number` of the sweep; `StoreError` when there is none."""
        ...

    def next_number(self, sweep_id: int) -> int:
        """The number the sweep's next trial gets (one past the highest stored; 0 for none)."""
        ...

    def usage(self, sweep_id: int) -> Usage:
        """Trial counts and times, as the budget counts them."""
        ...

    def total_steps(self, sweep_id: int) -> int:
        """Steps run by the sweep's trials so far: the last step each reached, running trials included."""
        ...

    def create_trial(
        self,
        sweep_id: int,
        number: int,
        config: Config,
        config_hash: str,
        state: TrialState = TrialState.RUNNING,
        *,
        values: Sequence[float] | None = None,
        metrics: Mapping[str, float] | None = None,
        reason: str | None = None,
        duplicate_of: int | None = None,
        bracket: int = 0,
        lineage: Mapping[str, Any] | None = None,
    ) -> TrialRecord:
        """Insert trial `number` in `state` (RUNNING, or an end for a trial that never runs:
        PRUNED_INVALID, PRUNED_DUPLICATE); `StoreError` when the number is taken."""
        ...

    def find_config(self, sweep_id: int, config_hash: str, states: Iterable[TrialState]) -> TrialRecord | None:
        """The earliest trial with this configuration in one of `states`, if any."""
        ...

    def resume_trial(self, trial_id: int) -> TrialRecord:
        """Start the next attempt of a PAUSED, FAIL_RECOVERABLE or INTERRUPTED trial: RUNNING again,
        attempt + 1."""
        ...

    def end_attempt(self, trial_id: int, attempt: int, outcome: Outcome) -> TrialRecord:
        """Record how attempt `attempt` ended unless its end is recorded already (the first end wins);
        the trial as stored either way."""
        ...

    def give_up(self, trial_id: int, reason: str) -> TrialRecord:
        """A FAIL_RECOVERABLE trial that will not be retried becomes FAIL."""
        ...

    def leave_paused(self, sweep_id: int, reason: str) -> list[TrialRecord]:
        """Mark every trial still PAUSED as PRUNED (the sweep ends without promoting them)."""
        ...

    def rungs(self, sweep_id: int, after_id: int = 0) -> list[tuple[int, int, int, int, float]]:
        """Rung records (id, trial number, bracket, level, score) with id > `after_id`, in arrival order."""
        ...


__all__ = ["LoopStore"]
