"""The REINFORCE searcher: it learns where the reward is, survives a move, and runs a real sweep."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from prefect_hpo import Budget, sweep
from prefect_hpo.errors import StrategyError
from prefect_hpo.objective import Objective
from prefect_hpo.records import Config, TrialRecord, TrialState
from prefect_hpo.space import Categorical, Float, Int, SearchSpace, config_hash
from prefect_hpo.strategies import RLStrategy, build_strategy

SPACE = SearchSpace.build(
    {
        "act": Categorical(["relu", "tanh", "gelu"]),
        "x": Float(0.0, 1.0),
        "n": Int(1, 64, log=True),
        "depth": Int(1, 3),
        "dropout": Float(0.0, 0.5, when={"depth": [2, 3]}),
    }
)


def loss(config: Config) -> float:
    """Lowest for tanh, x near 0.7 and n near 16."""
    return (config["act"] != "tanh") * 1.0 + (config["x"] - 0.7) ** 2 * 4 + abs(config["n"] - 16) / 16


def finished(number: int, config: Config) -> TrialRecord:
    value = loss(config)
    return TrialRecord(
        id=number,
        sweep_id=1,
        number=number,
        config=config,
        config_hash=config_hash(config),
        state=TrialState.COMPLETE,
        values=(value,),
    )


def test_the_policy_moves_towards_the_reward() -> None:
    strategy = build_strategy("rl", SPACE, (Objective("loss"),), seed=0)
    assert isinstance(strategy, RLStrategy)
    losses = []
    for number in range(200):
        config = strategy.ask().config
        assert config is not None
        assert ("dropout" in config) == (config["depth"] >= 2)  # conditions hold
        losses.append(loss(config))
        strategy.tell(finished(number, config))
    beliefs = strategy.probabilities()
    assert beliefs["act"]["'tanh'"] > 0.6  # from a third at the start
    assert max(beliefs["x"], key=beliefs["x"].__getitem__) in ("0.6666666666666666", "0.7777777777777777")
    assert statistics.mean(losses[-40:]) < statistics.mean(losses[:40]) / 2


def test_state_dict_moves_the_searcher_to_another_process() -> None:
    first = RLStrategy(SPACE, Objective("loss"), seed=3)
    for number in range(30):
        config = first.ask().config
        assert config is not None
        first.tell(finished(number, config))
    state = json.loads(json.dumps(first.state_dict()))  # JSON-safe: it travels as text
    second = RLStrategy(SPACE, Objective("loss"), seed=99)
    second.load_state_dict(state)
    assert [first.ask() for _ in range(5)] == [second.ask() for _ in range(5)]
    with pytest.raises(ValueError, match="not an RL searcher's state"):
        second.load_state_dict({"kind": "tpe"})


def test_rl_runs_a_sweep_and_refuses_several_objectives(tmp_path: Path) -> None:
    result = sweep(
        loss,
        SPACE,
        "loss",
        "rl",
        Budget(max_trials=12, max_concurrent=2),
        storage=f"sqlite:///{tmp_path / 'hpo.db'}",
        seed=1,
        workers="threads",
        artifact_interval=None,
    )
    assert len(result.records) == 12 and all(r.state == TrialState.COMPLETE for r in result.records)
    with pytest.raises(StrategyError, match="'rl' learns from one reward"):
        build_strategy("rl", SPACE, (Objective("a"), Objective("b", "max")), seed=0)
