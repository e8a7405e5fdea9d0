"""Searchers saved with state_dict() and loaded elsewhere go on as if they had never moved."""

from __future__ import annotations

import json

import pytest

from prefect_hpo.objective import Objective
from prefect_hpo.records import TrialRecord, TrialState
from prefect_hpo.space import Categorical, Float, SearchSpace, config_hash
from prefect_hpo.strategies import build_strategy

SPACE = SearchSpace.build({"x": Float(0.0, 1.0), "k": Categorical(["a", "b", "c"])})
LOSS = (Objective("loss"),)


def _told(strategy: object, n: int) -> None:
    for number in range(n):
        config = strategy.ask().config  # type: ignore[attr-defined]
        value = (config["x"] - 0.4) ** 2 + (config["k"] != "b")
        strategy.tell(  # type: ignore[attr-defined]
            TrialRecord(
                id=number,
                sweep_id=1,
                number=number,
                config=config,
                config_hash=config_hash(config),
                state=TrialState.COMPLETE,
                values=(value,),
            )
        )


@pytest.mark.parametrize("name", ["tpe", "random", "grid", "rl"])
def test_a_loaded_searcher_proposes_what_the_saved_one_would(name: str) -> None:
    first = build_strategy(name, SPACE, LOSS, seed=5, grid_resolution=8)
    _told(first, 14)
    state = json.loads(json.dumps(first.state_dict()))  # type: ignore[attr-defined]
    second = build_strategy(name, SPACE, LOSS, seed=77, grid_resolution=8)
    second.load_state_dict(state)  # type: ignore[attr-defined]
    assert [first.ask() for _ in range(3)] == [second.ask() for _ in range(3)]
    other = "grid" if name != "grid" else "tpe"
    with pytest.raises(ValueError, match="state"):
        build_strategy(other, SPACE, LOSS, seed=0).load_state_dict(state)  # type: ignore[attr-defined]
