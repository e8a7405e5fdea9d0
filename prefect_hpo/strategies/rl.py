"""A searcher that learns a policy over the search space from rewards, with REINFORCE (strategy "rl").

AutoGluon's RLScheduler drove its search with an LSTM controller trained by REINFORCE. Ours keeps
the method and drops the LSTM: each parameter has its own logits over a discretized set of values
(every choice of a Categorical, up to `bins` points of a numeric range, evenly spaced, or log-spaced
for a log range), a configuration is drawn parameter by parameter from their softmax, and each
finished trial moves the logits of the values it used by

    logits[p][chosen] += lr * advantage * (1 - softmax[chosen]),  logits[p][other] -= lr * advantage * softmax[other]

with advantage = (reward - baseline) / scale, reward the objective in "higher is better" form, the
baseline an exponential moving average of rewards and the scale one of absolute deviations, so that
the learning rate means the same whatever the objective's units. Written here (a few dozen lines of
numpy) because no library we use offers a REINFORCE searcher over a mixed space; Optuna's samplers do
not learn a policy.

Conditional parameters work through the space's own define-by-run walk; failed and rejected trials
teach nothing (no reward), as in AutoGluon. `state_dict()` / `load_state_dict()` carry the policy,
the baseline and the random stream, so a searcher moves to another process or machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from prefect_hpo.objective import Objective
from prefect_hpo.records import TrialRecord, TrialState
from prefect_hpo.space import SearchSpace, config_hash
from prefect_hpo.strategies.base import Suggestion


class RLStrategy:
    """REINFORCE over per-parameter logits with a moving-average baseline."""

    def __init__(
        self,
        space: SearchSpace,
        objective: Objective,
        *,
        seed: int | None = None,
        bins: int = 10,
        lr: float = 0.5,
        baseline_decay: float = 0.9,
    ) -> None:
        self._space, self._objective = space, objective
        self._bins, self._lr, self._decay = bins, lr, baseline_decay
        self._rng = np.random.default_rng(seed)
        self._values: dict[str, list[Any]] = {}  # parameter -> its discrete values
        self._logits: dict[str, np.ndarray] = {}
        self._baseline: float | None = None
        self._scale = 1.0
        self._told = 0
        self._pending: dict[str, dict[str, int]] = {}  # config hash -> parameter -> chosen index

    # ---- the Strategy protocol ----

    def ask(self) -> Suggestion:
        walker = _PolicyWalk(self)
        config = self._space.suggest(walker)
        self._pending[config_hash(config)] = walker.chosen
        return Suggestion(config)

    def tell(self, trial: TrialRecord) -> None:
        chosen = self._pending.pop(trial.config_hash, None)
        reward = self._reward(trial)
        if reward is None:
            return
        if chosen is None:  # a trial this searcher did not propose (a resumed sweep's): its nearest values
            chosen = {n: self._nearest(n, v) for n, v in trial.config.items() if n in self._logits}
        if self._baseline is None:
            self._baseline, self._scale = reward, max(abs(reward), 1e-12)
        advantage = (reward - self._baseline) / self._scale
        for name, index in chosen.items():
            probs = _softmax(self._logits[name])
            gradient = -probs
            gradient[index] += 1.0
            self._logits[name] = self._logits[name] + self._lr * advantage * gradient
        self._scale = self._decay * self._scale + (1 - self._decay) * max(abs(reward - self._baseline), 1e-12)
        self._baseline = self._decay * self._baseline + (1 - self._decay) * reward
        self._told += 1

    # ---- what it learned ----

    def probabilities(self) -> dict[str, dict[str, float]]:
        """Each parameter's current distribution over its discrete values (what the policy believes)."""
        return {
            name: {repr(v): float(p) for v, p in zip(self._values[name], _softmax(logits), strict=True)}
            for name, logits in self._logits.items()
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to go on elsewhere: policy, baseline, random stream, pending proposals (JSON-safe)."""
        return {
            "kind": "rl",
            "bins": self._bins,
            "lr": self._lr,
            "baseline_decay": self._decay,
            "values": {n: list(v) for n, v in self._values.items()},
            "logits": {n: [float(x) for x in v] for n, v in self._logits.items()},
            "baseline": self._baseline,
            "scale": self._scale,
            "told": self._told,
            "pending": self._pending,
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "rl":
            raise ValueError(f"not an RL searcher's state (kind {state.get('kind')!r})")
        self._bins, self._lr, self._decay = int(state["bins"]), float(state["lr"]), float(state["baseline_decay"])
        self._values = {n: list(v) for n, v in state["values"].items()}
        self._logits = {n: np.asarray(v, dtype=float) for n, v in state["logits"].items()}
        self._baseline, self._scale = state["baseline"], float(state["scale"])
        self._told = int(state["told"])
        self._pending = {k: dict(v) for k, v in state["pending"].items()}
        self._rng.bit_generator.state = state["rng"]

    # ---- internals ----

    def _reward(self, trial: TrialRecord) -> float | None:
        usable = trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED_DUPLICATE)
        if not usable or trial.value is None or not math.isfinite(trial.value):
            return None
        return -trial.value if self._objective.direction == "minimize" else trial.value

    def _nearest(self, name: str, value: Any) -> int:
        values = self._values[name]
        if value in values:
            return values.index(value)
        try:
            return int(np.argmin([abs(float(v) - float(value)) for v in values]))
        except (TypeError, ValueError):
            return 0

    def choose(self, name: str, values: list[Any]) -> int:
        """Draw the index of one of `values` for parameter `name` from its policy (uniform on first sight)."""
        if name not in self._logits:
            self._values[name] = values
            self._logits[name] = np.zeros(len(values))
        return int(self._rng.choice(len(self._values[name]), p=_softmax(self._logits[name])))


class _PolicyWalk:
    """Answers the space's define-by-run questions from the policy; remembers what it chose."""

    def __init__(self, strategy: RLStrategy) -> None:
        self._strategy = strategy
        self.chosen: dict[str, int] = {}

    def _pick(self, name: str, values: list[Any]) -> Any:
        index = self._strategy.choose(name, values)
        self.chosen[name] = index
        return self._strategy._values[name][index]

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return float(self._pick(name, _grid(low, high, self._strategy._bins, log=log, step=step)))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        count = (high - low) // step + 1
        if count <= self._strategy._bins:
            values: list[Any] = list(range(low, high + 1, step))
        else:
            points = _grid(low, high, self._strategy._bins, log=log, step=None)
            values = sorted({low + round((p - low) / step) * step for p in points})
        return int(self._pick(name, values))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._pick(name, list(choices))


def _grid(low: float, high: float, bins: int, *, log: bool, step: float | None) -> list[float]:
    if step is not None:
        count = math.floor((high - low) / step + 1e-9) + 1
        if count <= bins:
            return [low + i * step for i in range(count)]
        picks = np.linspace(0, count - 1, bins).round().astype(int)
        return [low + int(i) * step for i in sorted(set(picks.tolist()))]
    if log:
        return [float(v) for v in np.geomspace(low, high, bins)]
    return [float(v) for v in np.linspace(low, high, bins)]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    probabilities: np.ndarray = shifted / shifted.sum()
    return probabilities
