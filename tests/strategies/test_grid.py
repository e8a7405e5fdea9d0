"""Grid strategy: every point once, then exhausted; resumes by skipping what it was told."""

from __future__ import annotations

from prefect_hpo.objective import Objective
from prefect_hpo.records import TrialRecord, TrialState
from prefect_hpo.space import Categorical, Float, SearchSpace, config_hash
from prefect_hpo.strategies import GridStrategy, build_strategy


def record(config: dict, number: int = 0) -> TrialRecord:
    return TrialRecord(
        id=number,
        sweep_id=1,
        number=number,
        config=config,
        config_hash=config_hash(config),
        state=TrialState.COMPLETE,
        values=(1.0,),
    )


SPACE = SearchSpace.build({"a": Categorical(["x", "y"]), "b": Float(0.0, 1.0)})


def test_every_point_once_then_none() -> None:
    grid = build_strategy("grid", SPACE, (Objective("loss"),), grid_resolution=3)
    asked = []
    while (suggestion := grid.ask()) is not None:
        asked.append(suggestion.config)
    assert len(asked) == 6 == len({config_hash(c) for c in asked})
    assert grid.ask() is None


def test_told_points_are_skipped() -> None:
    first_two = list(SPACE.grid(3))[:2]
    grid = GridStrategy(SPACE, resolution=3)
    for i, config in enumerate(first_two):
        grid.tell(record(config, i))
    rest = []
    while (suggestion := grid.ask()) is not None:
        rest.append(suggestion.config)
    assert len(rest) == 4 and all(c not in first_two for c in rest)
