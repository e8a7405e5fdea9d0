"""BOHB: TPE that learns from every budget (Falkner et al., 2018), for multi-fidelity sweeps.

One TPE model per rung level (budget) and one for final results. A new configuration
comes from the model of the largest budget that has at least `min_points`
observations (d + 2 by default, d being the number of searched parameters), else
from the final model's random start-up; a `random_fraction` of proposals (a third,
as in the paper) is drawn at random to keep exploring. Rung scores reach it through `tell_rung`,
which the loop calls for each rung record the store receives. Optuna's
TPESampler + HyperbandPruner, in contrast, fits one model on completed trials and
on pruned trials ranked by how far they got.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict

import optuna
from optuna.trial import TrialState as OptunaState

from prefect_hpo.objective import Objective
from prefect_hpo.records import Config, TrialRecord
from prefect_hpo.space import Fixed, SearchSpace, config_hash
from prefect_hpo.strategies.base import Suggestion
from prefect_hpo.strategies.optuna_sampler import OptunaStrategy


class BohbStrategy:
    """TPE per budget; proposes from the largest budget with enough observations."""

    def __init__(
        self,
        space: SearchSpace,
        objectives: tuple[Objective, ...],
        levels: tuple[int, ...],
        seed: int | None = None,
        min_points: int | None = None,
        random_fraction: float = 1 / 3,
    ) -> None:
        searched = sum(1 for p in space.params.values() if not isinstance(p, Fixed))
        self._min_points = min_points or searched + 2
        self._space = space
        self._final = OptunaStrategy(space, objectives, optuna.samplers.TPESampler(seed=seed))
        self._studies = {
            level: optuna.create_study(
                direction="minimize",  # rung scores are already in 'lower is better' form
                sampler=optuna.samplers.TPESampler(
                    seed=None if seed is None else (seed + 1 + i) % 2**32,  # numpy takes 0 to 2**32 - 1
                    n_startup_trials=0,
                ),
            )
            for i, level in enumerate(levels)
        }
        self._counts: dict[int, int] = defaultdict(int)
        self._final_count = 0
        self._pending: dict[str, list[tuple[int, optuna.Trial]]] = defaultdict(list)
        self._random_fraction = random_fraction
        self._coin = random.Random(seed)
        self._explorer = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))

    @property
    def model_level(self) -> int | None:
        """The budget the next proposal comes from (None: final results, or random start-up)."""
        if self._final_count >= self._min_points:
            return None
        for level in sorted(self._studies, reverse=True):
            if self._counts[level] >= self._min_points:
                return level
        return None

    def ask(self) -> Suggestion:
        level = self.model_level
        if level is not None and self._coin.random() < self._random_fraction:
            drawn = self._explorer.ask()
            config = self._space.suggest(drawn)
            self._explorer.tell(drawn, state=OptunaState.FAIL)  # a random sampler learns nothing anyway
            return Suggestion(config)
        if level is None:
            return self._final.ask()
        asked = self._studies[level].ask()
        config = self._space.suggest(asked)
        self._pending[config_hash(config)].append((level, asked))
        return Suggestion(config)

    def tell_rung(self, config: Config, level: int, score: float) -> None:
        study = self._studies.get(level)
        if study is None:
            return
        self._counts[level] += 1
        value = score if math.isfinite(score) else None
        state = OptunaState.COMPLETE if value is not None else OptunaState.FAIL
        waiting = self._pending.get(config_hash(config), [])
        for i, (asked_level, asked) in enumerate(waiting):
            if asked_level == level:
                del waiting[i]
                study.tell(asked, values=value, state=state, skip_if_finished=True)
                return
        study.add_trial(
            optuna.trial.create_trial(
                params=self._space.to_optuna_params(config),
                distributions=self._space.distributions(config),
                value=value,
                state=state,
            )
        )

    def tell(self, trial: TrialRecord) -> None:
        self._final.tell(trial)
        if trial.values and all(math.isfinite(v) for v in trial.values) and trial.state.value == "COMPLETE":
            self._final_count += 1
        # a trial that ended before the rung its proposal came from: that model learns it failed
        for level, asked in self._pending.pop(trial.config_hash, []):
            self._studies[level].tell(asked, state=OptunaState.FAIL, skip_if_finished=True)
