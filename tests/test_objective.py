"""Objectives: last vs best reported value, directions, missing metrics, dominance."""

from __future__ import annotations

import math

import pytest

from prefect_hpo.errors import ObjectiveError
from prefect_hpo.objective import Objective, build_objectives, dominates, objective_values

HISTORY = {"loss": [0.9, 0.3, 0.5], "acc": [0.1, 0.8, 0.6]}


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("min", 0.5), ("max", 0.5), ("min_global", 0.3), ("max_global", 0.9)],
)
def test_last_versus_global(mode: str, expected: float) -> None:
    (value,) = objective_values([Objective("loss", mode)], {}, HISTORY)  # type: ignore[arg-type]
    assert value == expected


def test_returned_value_wins_over_reports_for_last_modes() -> None:
    assert objective_values([Objective("loss")], {"loss": 0.7}, HISTORY) == (0.7,)
    # global modes compare the returned value with the reported ones
    assert objective_values([Objective("loss", "min_global")], {"loss": 0.1}, HISTORY) == (0.1,)


def test_missing_metric_names_it_and_what_the_trial_produced() -> None:
    with pytest.raises(ObjectiveError, match=r"reported metrics \['acc', 'loss'\] but the objective asks for 'f1'"):
        objective_values([Objective("f1", "max")], {}, HISTORY)


def test_a_typo_in_the_objective_suggests_fixing_the_objective_first() -> None:
    with pytest.raises(ObjectiveError) as caught:
        objective_values([Objective("val_los")], {"val_loss": 0.3, "acc": 0.9}, {})
    assert str(caught.value) == (
        "the training function returned metrics ['acc', 'val_loss'] but the objective asks for 'val_los'; "
        "did you mean 'val_loss'? change objective='val_los' to objective='val_loss' "
        "(or return a dict with 'val_los')"
    )


def test_a_close_match_keeps_the_objective_mode() -> None:
    with pytest.raises(
        ObjectiveError,
        match=r"did you mean 'accuracy'\? change objective='acuracy:max' to "
        r"objective='accuracy:max'",
    ):
        objective_values([Objective("acuracy", "max")], {"accuracy": 0.9}, {"accuracy": [0.8]})


def test_no_close_match_lists_the_metrics_to_choose_from() -> None:
    with pytest.raises(ObjectiveError, match=r"change the objective to one of the metrics \['acc', 'f1'\]"):
        objective_values([Objective("loss")], {"acc": 0.9, "f1": 0.5}, {})


def test_global_ignores_nan_reports() -> None:
    assert objective_values([Objective("loss", "min_global")], {}, {"loss": [math.nan, 0.4]}) == (0.4,)


def test_build_objectives_forms() -> None:
    assert build_objectives("acc:max") == (Objective("acc", "max"),)
    assert build_objectives({"metric": "loss"}) == (Objective("loss", "min"),)
    assert len(build_objectives([Objective("a"), "b:max"])) == 2
    with pytest.raises(ObjectiveError, match="repeat"):
        build_objectives(["a", "a:max"])
    with pytest.raises(ObjectiveError, match="mode 'lowest'"):
        Objective("a", "lowest")  # type: ignore[arg-type]
    with pytest.raises(ObjectiveError, match="'metric' key"):
        build_objectives({"mode": "min"})


def test_dominance_respects_directions() -> None:
    objs = [Objective("loss", "min"), Objective("acc", "max")]
    assert dominates((0.1, 0.9), (0.2, 0.8), objs)
    assert not dominates((0.1, 0.7), (0.2, 0.8), objs)
    assert not dominates((0.1, 0.9), (0.1, 0.9), objs)
