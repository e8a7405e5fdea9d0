"""Search strategies: grid, random, Optuna's samplers, RL, BOHB and PBT, behind one small interface."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import optuna

from prefect_hpo.errors import StrategyError
from prefect_hpo.objective import Objective
from prefect_hpo.space import SearchSpace
from prefect_hpo.strategies.base import WAIT, Exhausted, Strategy, Suggestion
from prefect_hpo.strategies.bohb import BohbStrategy
from prefect_hpo.strategies.grid import GridStrategy
from prefect_hpo.strategies.optuna_sampler import OptunaStrategy
from prefect_hpo.strategies.pbt import PBTStrategy
from prefect_hpo.strategies.rl import RLStrategy

__all__ = [
    "WAIT",
    "BohbStrategy",
    "Exhausted",
    "GridStrategy",
    "OptunaStrategy",
    "PBTStrategy",
    "RLStrategy",
    "Strategy",
    "Suggestion",
    "build_strategy",
    "pbt_scheduler_alias",
    "strategy_name",
    "STRATEGY_NAMES",
]


def _gp(seed: int | None) -> optuna.samplers.BaseSampler:
    try:
        import torch  # noqa: F401  - GPSampler needs it; say so before Optuna fails mid-sweep
    except ImportError:
        raise StrategyError(
            "strategy 'gp' needs PyTorch (Optuna's GPSampler is built on it); "
            "install it with: pip install 'prefect-hpo[gp]'"
        ) from None
    return optuna.samplers.GPSampler(seed=seed)


def _qmc(seed: int | None) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # Optuna marks QMCSampler experimental; the user chose it by name
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(seed=seed, scramble=seed is not None, warn_independent_sampling=False)


_SAMPLERS: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "gp": _gp,
    "cmaes": lambda seed: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
    "qmc": _qmc,
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),
}
_SINGLE_OBJECTIVE_ONLY = {"cmaes"}
STRATEGY_NAMES = ("grid", "rl", *_SAMPLERS, "bohb", "pbt")


def _moved_on(seed: int | None, stored_trials: int) -> int | None:
    """The seed of a continued sweep, within numpy's 0 to 2**32 - 1 (from the largest seed, it wraps)."""
    return seed if seed is None or stored_trials == 0 else (seed + stored_trials) % 2**32


def strategy_name(strategy: Any) -> str:
    """The name a strategy is stored under: its given name (a dict's "type"), or its class name."""
    if isinstance(strategy, Mapping) and isinstance(strategy.get("type"), str):
        return str(strategy["type"])
    return strategy if isinstance(strategy, str) else type(strategy).__name__


def pbt_scheduler_alias(scheduler: Any) -> str | dict[str, Any] | None:
    """The strategy that `scheduler="pbt"` (or `{"type": "pbt", ...}`), its first spelling, stands for,
    after a DeprecationWarning naming the new one; None for any other scheduler.

    Population-based training is a way of searching (it decides configurations and where trials start),
    not an early-stopping rule, so it is a strategy now."""
    kind = scheduler.get("type") if isinstance(scheduler, Mapping) else scheduler
    if not isinstance(kind, str) or kind.lower() != "pbt":
        return None
    fix = "strategy='pbt'" if isinstance(scheduler, str) else f"strategy={dict(scheduler)!r}"
    warnings.warn(
        f"scheduler={scheduler!r} is deprecated: population-based training is a strategy; pass {fix} "
        "and leave scheduler unset",
        DeprecationWarning,
        stacklevel=_user_stacklevel(),
    )
    return "pbt" if isinstance(scheduler, str) else {**scheduler, "type": "pbt"}


def _user_stacklevel() -> int:
    """The `stacklevel` that points a warning raised by this module's caller at the first frame outside
    prefect_hpo: the user's own line, where Python's default filters show a DeprecationWarning."""
    package = str(Path(__file__).resolve().parents[1])
    frame: FrameType | None = sys._getframe(2)  # the function that warns is 1; its caller is 2
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def build_strategy(
    strategy: str | Mapping[str, Any] | optuna.samplers.BaseSampler | Strategy,
    space: SearchSpace,
    objectives: tuple[Objective, ...],
    *,
    seed: int | None = None,
    grid_resolution: int = 5,
    rung_levels: tuple[int, ...] = (),
    stored_trials: int = 0,
) -> Strategy:
    """A ready strategy from a name, a dict (`{"type": "pbt", "population": 8, ...}`: a name and its
    options), an Optuna sampler instance, or an object with ask/tell.

    "pbt" is population-based training (`PBTStrategy`; a dict's other keys are its options), with one
    objective; its seed is not moved on for a continued sweep, since it recomputes its plan from it.
    "bohb" needs `rung_levels` (a multi-fidelity scheduler's rungs) and one objective. "tpe" stays
    Optuna's TPE under any scheduler: it learns from stopped trials by the step they reached, and beat
    BOHB under ASHA on all three quality problems of benchmarks/README.md (MF-Hartmann 3 and 6, digits).
    `stored_trials` > 0 means the sweep continues: seeded "random" replays its random stream up to
    where the sweep stands (`OptunaStrategy.restore`), so that a seeded random sweep proposes the same
    configurations however often it was interrupted; the other seeded samplers cannot be replayed
    cheaply (their proposals depend on the history at each ask) and get the seed moved on by
    `stored_trials` instead, so that they do not propose their earlier configurations again from the
    same stream (all would be duplicates).
    """
    if isinstance(strategy, optuna.samplers.BaseSampler):
        return OptunaStrategy(space, objectives, strategy)
    if isinstance(strategy, str):
        return _named(strategy, {}, space, objectives, seed, grid_resolution, rung_levels, stored_trials)
    if isinstance(strategy, Mapping):
        kind = strategy.get("type")
        if not isinstance(kind, str):
            raise StrategyError(
                "a strategy given as a dict names it under 'type' (e.g. {'type': 'pbt', 'population': 8}), "
                f"got {dict(strategy)!r}"
            )
        options = {k: v for k, v in strategy.items() if k != "type"}
        return _named(kind, options, space, objectives, seed, grid_resolution, rung_levels, stored_trials)
    if isinstance(strategy, Strategy):
        return strategy
    raise StrategyError(
        f"strategy {strategy!r} is neither a name ({list(STRATEGY_NAMES)}), an Optuna sampler, "
        "nor an object with ask() and tell(trial)"
    )


def _named(
    strategy: str,
    options: dict[str, Any],
    space: SearchSpace,
    objectives: tuple[Objective, ...],
    seed: int | None,
    grid_resolution: int,
    rung_levels: tuple[int, ...],
    stored_trials: int,
) -> Strategy:
    """The strategy called `strategy`, with `options` (only "pbt" takes any)."""
    name = strategy.lower()
    if name == "pbt":
        if len(objectives) != 1:
            raise StrategyError("pbt ranks its population by one objective; give exactly one")
        try:
            return PBTStrategy(space, objectives[0], seed=seed, **options)
        except TypeError as exc:
            raise StrategyError(f"strategy 'pbt': {exc}") from None
    if options:
        raise StrategyError(
            f"strategy {strategy!r} takes no options in a dict (got {sorted(options)}); give its name alone, "
            "or an Optuna sampler built with its options"
        )
    if name == "grid":
        return GridStrategy(space, resolution=grid_resolution)
    if name == "rl":
        if len(objectives) > 1:
            raise StrategyError(
                f"strategy 'rl' learns from one reward, but {len(objectives)} objectives were given; "
                "use 'nsga2', 'tpe' or 'random' for several objectives"
            )
        return RLStrategy(space, objectives[0], seed=_moved_on(seed, stored_trials))
    if name == "bohb":
        if not rung_levels:
            raise StrategyError(
                "strategy 'bohb' learns from the rungs of a multi-fidelity scheduler, and none was given; "
                "add scheduler='hyperband' (or 'asha'), or use strategy='tpe'"
            )
        if len(objectives) > 1:
            raise StrategyError(
                f"strategy 'bohb' optimises one objective, but {len(objectives)} were given; "
                "use 'nsga2', 'tpe' or 'random' for several objectives"
            )
        return BohbStrategy(space, objectives, rung_levels, seed=_moved_on(seed, stored_trials))
    if name not in _SAMPLERS:
        raise StrategyError(f"strategy {strategy!r} is unknown; use one of {list(STRATEGY_NAMES)} or an Optuna sampler")
    if name in _SINGLE_OBJECTIVE_ONLY and len(objectives) > 1:
        raise StrategyError(
            f"strategy {name!r} optimises one objective, but {len(objectives)} were given; "
            "use 'nsga2', 'tpe' or 'random' for several objectives"
        )
    if name == "random":
        return OptunaStrategy(space, objectives, optuna.samplers.RandomSampler(seed=seed), replays_asks=True)
    return OptunaStrategy(space, objectives, _SAMPLERS[name](_moved_on(seed, stored_trials)))
