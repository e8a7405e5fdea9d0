"""Any Optuna sampler as a strategy, over an in-memory Optuna study.

The study lives only in this process and is a cache: the trial store is the
truth, and a resumed sweep rebuilds the study by telling it every stored trial
(trials this study did not ask for are added with `Study.add_trial`).
"""

from __future__ import annotations

import base64
import math
import pickle
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import TrialState as OptunaState

from prefect_hpo.objective import Objective
from prefect_hpo.records import TrialRecord, TrialState
from prefect_hpo.space import SearchSpace, config_hash
from prefect_hpo.strategies.base import Suggestion


class OptunaStrategy:
    """Proposes through `study.ask()` and the space's define-by-run walk; learns through `study.tell()`."""

    def __init__(
        self,
        space: SearchSpace,
        objectives: tuple[Objective, ...],
        sampler: optuna.samplers.BaseSampler,
        *,
        replays_asks: bool = False,
    ) -> None:
        self._space = space
        self._replays_asks = replays_asks
        # Optuna logs each created study and told trial at INFO; the sweep logs each trial once itself.
        if optuna.logging.get_verbosity() <= optuna.logging.INFO:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._study = optuna.create_study(directions=[o.direction for o in objectives], sampler=sampler)
        self._pending: dict[str, list[optuna.Trial]] = defaultdict(list)

    @property
    def study(self) -> optuna.Study:
        """The in-memory study (read-only use: plots, importances)."""
        return self._study

    def ask(self) -> Suggestion:
        trial = self._study.ask()
        config = self._space.suggest(trial)
        self._pending[config_hash(config)].append(trial)
        return Suggestion(config)

    def state_dict(self) -> dict[str, Any]:
        """The study (its sampler, random stream and trials) and the pending proposals, pickled and
        base64-encoded: a string that travels in JSON. Load only states you made yourself (pickle)."""
        payload = pickle.dumps((self._study, dict(self._pending), self._replays_asks))
        return {"kind": "optuna", "pickle": base64.b64encode(payload).decode("ascii")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "optuna":
            raise ValueError(f"not an Optuna searcher's state (kind {state.get('kind')!r})")
        study, pending, replays = pickle.loads(base64.b64decode(state["pickle"]))
        self._study, self._replays_asks = study, replays
        self._pending = defaultdict(list, pending)

    def restore(self, trials: Sequence[TrialRecord]) -> None:
        """Rebuild from the store's trials (all of them, by number) before the first ask of a continued sweep.

        With `replays_asks` (a sampler whose proposals depend on its random stream alone: random
        search), the sampler is first asked once per stored trial, as the interrupted runs asked it, so
        that its stream stands where they left it and it goes on with what an uninterrupted run would
        have proposed. Asks are cheap for such a sampler (10,000 in well under a second). Every finished
        trial is then told; trials still running (orphans run again) are told when they end.
        """
        if self._replays_asks:
            for _ in trials:
                self.ask()
        for trial in trials:
            if trial.state.is_finished:
                self.tell(trial)

    def tell(self, trial: TrialRecord) -> None:
        state, values = _optuna_outcome(trial)
        # A stopped trial's last score lets TPE rank it among stopped trials by the step it
        # reached and its value there, as it does under Optuna's own pruners.
        reached = _stopped_at(trial) if len(self._study.directions) == 1 else None
        pending = self._pending.get(trial.config_hash)
        if pending:
            asked = pending.pop(0)
            if not pending:
                del self._pending[trial.config_hash]
            if reached is not None and state == OptunaState.PRUNED:
                asked.report(reached[1], reached[0])
            self._study.tell(asked, values=values, state=state, skip_if_finished=True)
            return
        self._study.add_trial(
            optuna.trial.create_trial(
                params=self._space.to_optuna_params(trial.config),
                distributions=self._space.distributions(trial.config),
                values=values,
                state=state,
                intermediate_values={reached[0]: reached[1]} if reached and state == OptunaState.PRUNED else None,
            )
        )


def _stopped_at(trial: TrialRecord) -> tuple[int, float] | None:
    """(step, first objective value) where a stopped trial ended, if it reported both."""
    value = trial.value
    if trial.last_step is None or value is None or not math.isfinite(value):
        return None
    return trial.last_step, value


def _optuna_outcome(trial: TrialRecord) -> tuple[OptunaState, list[float] | None]:
    """How Optuna should see a finished trial: COMPLETE with values, PRUNED, or FAIL."""
    values = list(trial.values) if trial.values else None
    usable = values is not None and all(math.isfinite(v) for v in values)
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED_DUPLICATE) and usable:
        return OptunaState.COMPLETE, values
    if trial.state == TrialState.PRUNED:
        return OptunaState.PRUNED, None
    return OptunaState.FAIL, None
