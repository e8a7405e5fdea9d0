"""Optuna samplers as strategies: names, seeds, learning from results, stored trials, multi-objective."""

from __future__ import annotations

import importlib.util
import math

import optuna
import pytest

from prefect_hpo.errors import StrategyError
from prefect_hpo.objective import Objective
from prefect_hpo.records import TrialRecord, TrialState
from prefect_hpo.space import Categorical, Float, Int, SearchSpace, config_hash
from prefect_hpo.strategies import STRATEGY_NAMES, OptunaStrategy, Suggestion, build_strategy

SPACE = SearchSpace.build({"x": Float(-5.0, 5.0), "n": Int(1, 8), "act": Categorical(["relu", "tanh"])})
LOSS = (Objective("loss"),)


def finished(
    config: dict, number: int, values: tuple[float, ...] | None, state: TrialState = TrialState.COMPLETE
) -> TrialRecord:
    return TrialRecord(
        id=number, sweep_id=1, number=number, config=config, config_hash=config_hash(config), state=state, values=values
    )


def drive(strategy_name: str, seed: int, n: int = 12, objectives: tuple[Objective, ...] = LOSS) -> list[dict]:
    strategy = build_strategy(strategy_name, SPACE, objectives, seed=seed)
    configs = []
    for i in range(n):
        config = strategy.ask().config
        assert config is not None
        SPACE.validate_config(config)
        loss = (config["x"] - 1.0) ** 2 + config["n"]
        values = (loss,) if len(objectives) == 1 else (loss, float(config["n"]))
        strategy.tell(finished(config, i, values))
        configs.append(config)
    return configs


needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="strategy 'gp' needs the [gp] extra (torch)"
)


@pytest.mark.parametrize("name", ["random", "tpe", pytest.param("gp", marks=needs_torch), "cmaes", "qmc", "nsga2"])
def test_each_named_strategy_is_reproducible_with_a_seed(name: str) -> None:
    assert drive(name, seed=7) == drive(name, seed=7)
    assert drive(name, seed=7) != drive(name, seed=8)


def test_tpe_learns_from_what_it_is_told() -> None:
    space = SearchSpace.build({"x": Float(-10.0, 10.0)})
    strategy = build_strategy("tpe", space, LOSS, seed=3)
    xs = []
    for i in range(60):
        config = strategy.ask().config
        assert config is not None
        xs.append(config["x"])
        strategy.tell(finished(config, i, (abs(config["x"] - 4.0),)))
    early = sorted(abs(x - 4.0) for x in xs[:10])[5]
    late = sorted(abs(x - 4.0) for x in xs[-20:])[10]
    assert late < early / 3, (early, late)


def test_stored_trials_it_never_asked_for_are_added() -> None:
    strategy = build_strategy("tpe", SPACE, LOSS, seed=0)
    assert isinstance(strategy, OptunaStrategy)
    strategy.tell(finished({"x": 1.0, "n": 1, "act": "relu"}, 0, (1.0,)))
    strategy.tell(finished({"x": 2.0, "n": 3, "act": "tanh"}, 1, None, TrialState.FAIL))
    strategy.tell(finished({"x": 3.0, "n": 2, "act": "tanh"}, 2, (math.nan,), TrialState.FAIL))
    states = [t.state for t in strategy.study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.FAIL]
    assert strategy.study.best_trial.params == {"x": 1.0, "n": 1, "act": "relu"}


def test_nsga2_and_multi_objective() -> None:
    objectives = (Objective("loss"), Objective("n", "max"))
    configs = drive("nsga2", seed=1, n=10, objectives=objectives)
    assert len(configs) == 10
    with pytest.raises(StrategyError, match="'cmaes' optimises one objective"):
        build_strategy("cmaes", SPACE, objectives)


def test_a_sampler_instance_and_unknown_names() -> None:
    strategy = build_strategy(optuna.samplers.RandomSampler(seed=1), SPACE, LOSS)
    assert isinstance(strategy, OptunaStrategy)
    with pytest.raises(StrategyError, match="'hyperopt' is unknown"):
        build_strategy("hyperopt", SPACE, LOSS)
    with pytest.raises(StrategyError, match="neither a name"):
        build_strategy(42, SPACE, LOSS)  # type: ignore[arg-type]
    assert set(STRATEGY_NAMES) == {"grid", "rl", "random", "tpe", "gp", "cmaes", "qmc", "nsga2", "bohb", "pbt"}


def test_stopped_trials_tell_tpe_where_they_stopped() -> None:
    strategy = build_strategy("tpe", SPACE, LOSS, seed=0)
    assert isinstance(strategy, OptunaStrategy)
    config = strategy.ask().config
    assert config is not None
    stopped = TrialRecord(
        id=0,
        sweep_id=1,
        number=0,
        config=config,
        config_hash=config_hash(config),
        state=TrialState.PRUNED,
        values=(0.7,),
        last_step=3,
    )
    strategy.tell(stopped)
    other = {"x": 0.5, "n": 2, "act": "tanh"}
    strategy.tell(
        TrialRecord(
            id=1,
            sweep_id=1,
            number=1,
            config=other,
            config_hash=config_hash(other),
            state=TrialState.PRUNED,
            values=(0.9,),
            last_step=9,
        )
    )
    asked, added = strategy.study.trials
    assert asked.state == added.state == optuna.trial.TrialState.PRUNED
    assert asked.intermediate_values == {3: 0.7} and added.intermediate_values == {9: 0.9}


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_the_largest_seed_works_for_a_continued_sweep(name: str) -> None:
    """A continued sweep moves the seed on (seed + trials stored); from the largest seed sweep() accepts,
    that wraps around instead of passing numpy's 2**32 - 1."""
    levels = (1, 3, 9) if name == "bohb" else ()
    objectives = (*LOSS, Objective("acc", "max")) if name == "nsga2" else LOSS
    strategy = build_strategy(name, SPACE, objectives, seed=2**32 - 1, rung_levels=levels, stored_trials=3)
    assert isinstance(strategy.ask(), Suggestion)
