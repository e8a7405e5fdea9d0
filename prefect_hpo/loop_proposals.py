"""The strategy's proposals, turned into stored trials: numbering, the user's constraint, repeated configurations.

A part of the search loop (`prefect_hpo.loop`) with one job: decide whether a proposed configuration is
a new trial to start, a configuration the constraint rejects (stored PRUNED_INVALID and told as failed),
or one already evaluated (stored PRUNED_DUPLICATE with the earlier result, told again), and count the
rejections and repeats in a row that mean the space is spent. It knows nothing of slots, resources or
executors; the loop starts what it lets through.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from prefect_hpo.errors import StrategyError
from prefect_hpo.loop_store import LoopStore
from prefect_hpo.options import SweepOptions
from prefect_hpo.records import Config, TrialRecord, TrialState
from prefect_hpo.space import config_hash
from prefect_hpo.strategies.base import Strategy, Suggestion

#: States whose configuration counts as already evaluated (or being evaluated).
_EVALUATED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.PAUSED, TrialState.INTERRUPTED)


class Proposals:
    """One loop run's proposals: the next trial number, the configurations stored, and the runs of
    rejections and repeats; `exhausted` says why nothing more should be asked (None: ask on)."""

    def __init__(
        self,
        strategy: Strategy,
        store: LoopStore,
        sweep_id: int,
        options: SweepOptions,
        stored: Sequence[TrialRecord],
    ) -> None:
        self._strategy, self._store, self._sid, self._options = strategy, store, sweep_id, options
        #: the number the next stored trial gets
        self.number = store.next_number(sweep_id)
        # Configurations this sweep has stored: only these need a look in the store for a duplicate (the
        # loop holds the sweep's lease, so no one else adds any); a query per proposal cost ~4% of the
        # parent's time over 1,000 trivial trials.
        self._stored_keys = {past.config_hash for past in stored}
        self._duplicates_in_a_row = 0
        self._rejections_in_a_row = 0
        self.exhausted: str | None = None

    def suggestion(self, answer: object) -> Suggestion:
        """A proposal as a `Suggestion` (a bare configuration is a plain one); anything else is refused."""
        if isinstance(answer, Suggestion):
            return answer
        if isinstance(answer, dict):
            return Suggestion(answer)
        raise StrategyError(
            f"strategy {type(self._strategy).__name__}.ask() returned {answer!r}; return a Suggestion(config), "
            "a configuration (dict), WAIT (nothing now) or None (nothing more)"
        )

    def create_trial(
        self,
        config: Config,
        key: str,
        state: TrialState,
        *,
        bracket: int = 0,
        lineage: Mapping[str, Any] | None = None,
        values: tuple[float, ...] | None = None,
        metrics: Mapping[str, float] | None = None,
        reason: str | None = None,
        duplicate_of: int | None = None,
    ) -> TrialRecord:
        """Store the next trial number, remembering the configuration as stored."""
        record = self._store.create_trial(
            self._sid,
            self.number,
            config,
            key,
            state,
            values=values,
            metrics=metrics,
            reason=reason,
            duplicate_of=duplicate_of,
            bracket=bracket,
            lineage=lineage,
        )
        self.number += 1
        self._stored_keys.add(record.config_hash)
        return record

    def rejected(self, config: Config) -> bool:
        """Ask the user's constraint; a rejected configuration is stored PRUNED_INVALID and told as failed."""
        if self._options.constraint is None:
            return False
        verdict = self._options.constraint(config)
        if verdict is True or verdict is None:
            self._rejections_in_a_row = 0
            return False
        reason = verdict if isinstance(verdict, str) and verdict else "rejected by the constraint"
        invalid = self.create_trial(config, config_hash(config), TrialState.PRUNED_INVALID, reason=reason)
        self._strategy.tell(invalid)
        self._rejections_in_a_row += 1
        if self._rejections_in_a_row >= self._options.max_rejections_in_a_row:
            self.exhausted = (
                f"the constraint rejected {self._rejections_in_a_row} configurations in a row; loosen the "
                "constraint or narrow the search space to where it holds"
            )
        return True

    def repeated(self, config: Config, key: str, in_flight: Collection[str]) -> bool:
        """Whether `config` (hashed `key`) repeats one in flight (`in_flight`: their hashes) or stored.

        One in flight, or stored and not finished (e.g. a trial re-run after its parent died), as far as the
        loop has heard, leaves nothing to reuse yet and nothing worth a record; one finished is stored as a
        duplicate with its result. Both count towards the repeats in a row that end the search."""
        seen = None
        if key not in in_flight and key in self._stored_keys:
            seen = self._store.find_config(self._sid, key, _EVALUATED)
        if key in in_flight or (seen is not None and not seen.state.is_finished):
            self._count_duplicate()
            return True
        if seen is not None:
            duplicate = self.create_trial(
                config,
                key,
                TrialState.PRUNED_DUPLICATE,
                values=seen.values,
                metrics=seen.metrics,
                reason=f"same configuration as trial {seen.number}",
                duplicate_of=seen.number,
            )
            self._strategy.tell(duplicate)
            self._count_duplicate()
            return True
        self._duplicates_in_a_row = 0
        return False

    def _count_duplicate(self) -> None:
        self._duplicates_in_a_row += 1
        if self._duplicates_in_a_row >= self._options.max_consecutive_duplicates:
            self.exhausted = (
                f"search space exhausted: {self._duplicates_in_a_row} proposals in a row repeated "
                "configurations already evaluated"
            )
