"""Population-based training (Jaderberg et al., 2017), in generations (`strategy="pbt"`).

A population of `population` members trains in parallel. Each member's life is a chain of trials,
one per generation of `interval` steps: a trial starts from its parent's checkpoint at the step the
parent reached and trains `interval` more steps. When every member of a generation has finished, the
members are ranked by the objective; each member in the bottom `quantile` *exploits* a member of the
top quantile (chosen at random): it starts the next generation from that member's checkpoint and a
perturbed copy of its configuration (*explore*: each searched parameter is resampled with probability
`resample_probability`, else a number is multiplied by 0.8 or 1.2, within its range, and a choice moves
to a neighbouring one). The other members go on from their own checkpoint with their own
configuration. Every trial's lineage (member, generation, parent trial, steps, perturbation) is stored
with it and drawn as a plot.

Synchronous generations, where Ray Tune's PBT is asynchronous: each generation waits for its slowest
member, but the population's ranking is over results at the same step, decisions do not depend on
which trial happened to report first, and a resumed sweep recomputes exactly the plan it had (each
generation's random choices come from the seed and the generation number).

This is a strategy (it decides configurations and where trials start): each `ask` answers a `Suggestion`
naming the parent trial and the steps the new trial covers, and the loop runs it with the checkpoint
mechanism of promotion-form ASHA: it copies the parent's checkpoint folder to the new trial's and hands it
`trial.resume_step`, on local executors and work pools alike. (It was first offered as `scheduler="pbt"`,
which still works, with a DeprecationWarning.)
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import optuna

from prefect_hpo.arguments import is_integer
from prefect_hpo.errors import StrategyError
from prefect_hpo.objective import Objective
from prefect_hpo.records import Config, TrialRecord, TrialState
from prefect_hpo.space import Categorical, Fixed, Float, Int, SearchSpace
from prefect_hpo.strategies.base import WAIT, Exhausted, Suggestion, Wait


class PBTStrategy:
    """Plans generations of a population; see the module docstring."""

    def __init__(
        self,
        space: SearchSpace,
        objective: Objective,
        *,
        population: int = 8,
        interval: int = 5,
        generations: int = 10,
        quantile: float = 0.25,
        resample_probability: float = 0.25,
        seed: int | None = None,
    ) -> None:
        for field_name, value, least in (("population", population, 2), ("interval", interval, 1)):
            if not is_integer(value) or value < least:
                raise StrategyError(f"pbt: {field_name} must be an integer >= {least}, got {value!r}")
        if not is_integer(generations) or generations < 1:
            raise StrategyError(f"pbt: generations must be a positive integer, got {generations!r}")
        if not 0 < quantile <= 0.5:
            raise StrategyError(f"pbt: quantile must be in (0, 0.5], got {quantile!r}")
        if not 0 <= resample_probability <= 1:
            raise StrategyError(f"pbt: resample_probability must be in [0, 1], got {resample_probability!r}")
        if any(space.conditions.values()):
            raise StrategyError("pbt: conditional parameters are not supported; give a space without 'when'")
        self._space, self._objective = space, objective
        self.population, self.interval, self.generations = population, interval, generations
        self._quantile, self._resample = quantile, resample_probability
        self._seed = 0 if seed is None else seed
        self._generation = 0
        self._queue: list[Suggestion] = []  # planned, not yet asked
        self._results: dict[int, dict[int, TrialRecord]] = {}  # generation -> member -> finished trial
        self._asked: dict[int, set[int]] = {}  # generation -> members asked
        self._queue = self._plan(0)

    @property
    def total_steps(self) -> int:
        return self.interval * self.generations

    # ---- the Strategy protocol ----

    def ask(self) -> Suggestion | Wait | Exhausted:
        if not self._queue:
            if len(self._results.get(self._generation, {})) < self.population:
                return WAIT
            if self._generation + 1 >= self.generations:  # the last generation has finished
                return Exhausted(f"population-based training finished its {self.generations} generations")
            self._generation += 1
            self._queue = self._plan(self._generation)
        suggestion = self._queue.pop(0)
        generation, member = _member(suggestion)
        self._asked.setdefault(generation, set()).add(member)
        return suggestion

    def tell(self, trial: TrialRecord) -> None:
        lineage = trial.lineage
        if not lineage or "member" not in lineage:
            return
        if trial.state == TrialState.FAIL_RECOVERABLE:
            return  # it runs again
        self._results.setdefault(int(lineage["generation"]), {})[int(lineage["member"])] = trial

    def restore(self, trials: Sequence[TrialRecord]) -> None:
        """Rebuild from the store: results by generation, then the plan of the current generation
        (recomputed from the previous generation's results and the seed), less what was already asked."""
        for trial in trials:
            if trial.lineage and "member" in trial.lineage:
                generation, member = int(trial.lineage["generation"]), int(trial.lineage["member"])
                self._asked.setdefault(generation, set()).add(member)
                if trial.state.is_finished:
                    self.tell(trial)
        if not self._asked:
            return
        self._generation = max(self._asked)
        plan = self._plan(self._generation) if self._generation > 0 else self._plan(0)
        self._queue = [s for s in plan if _member(s)[1] not in self._asked[self._generation]]

    # ---- planning ----

    def _score(self, trial: TrialRecord) -> float:
        """Higher is better; a failed member ranks last."""
        value = trial.value
        if trial.state != TrialState.COMPLETE or value is None or not math.isfinite(value):
            return -math.inf
        return -value if self._objective.direction == "minimize" else value

    def _plan(self, generation: int) -> list[Suggestion]:
        """Each member's trial of `generation`: configuration, parent trial, steps (a resumed sweep gets the
        same plan again: the random choices come from the seed and the generation)."""
        rng = random.Random(self._seed * 1_000_003 + generation)
        start, end = generation * self.interval, (generation + 1) * self.interval
        if generation == 0:
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=self._seed))
            return [
                Suggestion(
                    self._space.suggest(study.ask()),
                    end_step=end,
                    may_repeat=True,
                    lineage={"member": m, "generation": 0},
                )
                for m in range(self.population)
            ]
        previous = self._results[generation - 1]
        ranked = sorted(previous, key=lambda m: (-self._score(previous[m]), m))
        cut = max(1, math.ceil(self._quantile * self.population))
        top, bottom = ranked[:cut], set(ranked[-cut:])
        plan = []
        for member in range(self.population):
            own = previous[member]
            facts: dict[str, Any] = {"member": member, "generation": generation}
            if member in bottom and member not in top:  # exploit a top member, explore around its configuration
                donor = previous[rng.choice(top)]
                config, changes = self._explore(dict(donor.config), rng)
                parent = donor.number
                facts.update(exploited=donor.number, replaced=own.number, perturbation=changes)
            else:  # go on as itself: its own checkpoint and configuration (not a duplicate)
                config, parent = dict(own.config), own.number
            plan.append(
                Suggestion(config, parent=parent, resume_step=start, end_step=end, may_repeat=True, lineage=facts)
            )
        return plan

    def _explore(self, config: Config, rng: random.Random) -> tuple[Config, dict[str, Any]]:
        changes: dict[str, Any] = {}
        fresh = self._space.suggest(
            optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=rng.randrange(2**31))).ask()
        )
        for name, param in self._space.params.items():
            if isinstance(param, Fixed):
                continue
            old = config[name]
            if rng.random() < self._resample:
                config[name] = fresh[name]
            elif isinstance(param, Categorical):
                choices = list(param.choices)
                index = choices.index(old) if old in choices else 0
                config[name] = choices[min(max(index + rng.choice((-1, 1)), 0), len(choices) - 1)]
            elif isinstance(param, Float | Int):
                moved = min(max(old * rng.choice((0.8, 1.2)), param.low), param.high)
                if param.step:  # back onto the range's steps
                    moved = min(param.low + round((moved - param.low) / param.step) * param.step, param.high)
                config[name] = round(moved) if isinstance(param, Int) else float(moved)
            if config[name] != old:
                changes[name] = [old, config[name]]
        return config, changes


def _member(suggestion: Suggestion) -> tuple[int, int]:
    """(generation, member) of a planned trial."""
    facts = suggestion.lineage or {}
    return int(facts["generation"]), int(facts["member"])
