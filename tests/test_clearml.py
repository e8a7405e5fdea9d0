"""ClearML's optimizer vocabulary on prefect_hpo: conversions, and a real optimization end to end."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from prefect_hpo import Categorical, Float, Int, TrialState
from prefect_hpo.budget import Budget
from prefect_hpo.clearml import (
    DiscreteParameterRange,
    GridSearch,
    HyperParameterOptimizer,
    LogUniformParameterRange,
    OptimizerBOHB,
    ParameterSet,
    RandomSearch,
    UniformIntegerParameterRange,
    UniformParameterRange,
    budget_of,
    flatten,
    objective_of,
    search_space,
)
from prefect_hpo.errors import PrefectHPOError, SearchSpaceError
from prefect_hpo.space import SearchSpace


def test_parameter_classes_become_our_space() -> None:
    space = search_space(
        [
            UniformParameterRange("dropout", 0.0, 0.5, step_size=0.1),
            UniformParameterRange("momentum", 0.8, 0.99),
            UniformIntegerParameterRange("layers", 1, 4, include_max_value=False),
            LogUniformParameterRange("lr", -4, -1),
            LogUniformParameterRange("wd", -6, -2, step_size=2, include_max_value=False),
            DiscreteParameterRange("act", ["relu", "tanh"]),
            ParameterSet([{"units": 64, "batch": 32}, {"units": 256, "batch": 128}]),
        ]
    )
    assert space["dropout"] == Float(0.0, 0.5, step=0.1)
    assert space["momentum"] == Float(0.8, 0.99)
    assert space["layers"] == Int(1, 3)  # max_value left out
    assert space["lr"] == Float(1e-4, 1e-1, log=True)  # ClearML's limits are exponents
    assert space["wd"] == Categorical([1e-6, 1e-4])
    assert space["act"] == Categorical(["relu", "tanh"])
    assert space["parameter_set_0"] == Categorical([{"units": 64, "batch": 32}, {"units": 256, "batch": 128}])
    SearchSpace.build(space)  # a valid space of ours
    assert flatten({"lr": 0.1, "parameter_set_0": {"units": 64, "batch": 32}}) == {"lr": 0.1, "units": 64, "batch": 32}
    with pytest.raises(SearchSpaceError, match="'bad'"):
        SearchSpace.build(search_space([UniformParameterRange("bad", 1.0, 0.0)]))
    with pytest.raises(PrefectHPOError, match="'act' appears twice"):
        search_space([DiscreteParameterRange("act", [1]), DiscreteParameterRange("act", [2])])


def test_signs_and_limits_map_onto_ours() -> None:
    assert objective_of("validation", "accuracy", "max_global").to_dict() == {
        "metric": "validation_accuracy",
        "mode": "max_global",
    }
    assert objective_of("loss", None, "min").metric == "loss"
    with pytest.raises(PrefectHPOError, match="objective_metric_sign 'maximum'"):
        objective_of("loss", None, "maximum")
    budget = budget_of(
        total_max_jobs=30,
        max_number_of_concurrent_tasks=4,
        optimization_time_limit=60,
        compute_time_limit=120,
        time_limit_per_job=5,
        min_iteration_per_job=2,
        max_iteration_per_job=27,
        bohb=False,
    )
    assert budget == Budget(
        max_trials=30,
        max_concurrent=4,
        time_limit=3600.0,
        compute_time_limit=7200.0,
        trial_time_limit=300.0,
        min_steps=2,
        max_steps=27,
    )
    with pytest.raises(PrefectHPOError, match="time_limit_per_job is in minutes"):
        budget_of(
            total_max_jobs=1,
            max_number_of_concurrent_tasks=1,
            optimization_time_limit=None,
            compute_time_limit=None,
            time_limit_per_job=-1,
            min_iteration_per_job=None,
            max_iteration_per_job=None,
            bohb=False,
        )


def scored(config: dict[str, Any], trial: Any) -> dict[str, float]:
    """Higher is better: lr near 1e-2 and the wide set win; keeps a checkpoint file per trial."""
    score = -abs(math.log10(config["lr"]) + 2) + (1.0 if config["units"] == 256 else 0.0)
    for step in range(1, 4):
        trial.report(step, validation_accuracy=score - 1.0 / step)
    (trial.checkpoint_dir / "model.txt").write_text(f"{config['units']} {config['batch']}")
    return {"validation_accuracy": score}


def test_an_optimization_keeps_the_top_k_checkpoints_only(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    optimizer = HyperParameterOptimizer(
        base_task_id=scored,
        hyper_parameters=[
            LogUniformParameterRange("lr", -4, -1),
            ParameterSet([{"units": 64, "batch": 32}, {"units": 256, "batch": 128}]),
        ],
        objective_metric_title="validation",
        objective_metric_series="accuracy",
        objective_metric_sign="max",
        optimizer_class=RandomSearch,
        max_number_of_concurrent_tasks=2,
        total_max_jobs=8,
        save_top_k_tasks_only=3,
        storage=f"sqlite:///{tmp_path / 'hpo.db'}",
        name="from-clearml",
        seed=0,
        options={"workers": "threads", "checkpoints": str(checkpoints), "artifact_interval": None},
    )
    assert optimizer.start()
    assert optimizer.wait(timeout=300)
    result = optimizer.controller.result()
    assert len(result.trials_by_state(TrialState.COMPLETE)) == 8  # the store keeps every trial
    curves = result.get_training_curves(filename=tmp_path / "curves.png", plot=True)
    assert len(curves) == 8 * 3 and (tmp_path / "curves.png").stat().st_size > 10_000
    top = optimizer.get_top_experiments(3)
    values = [r.value for r in top]
    assert values == sorted(values, reverse=True) and values[0] == result.best_value  # "max": highest first
    [folder] = checkpoints.iterdir()  # the sweep's own folder
    assert folder == Path(result.checkpoint_path(0)).parent
    kept = sorted(p.name for p in folder.iterdir())
    assert kept == sorted(f"trial-{r.number}" for r in top)  # everyone else's files are gone
    for record in top:  # the set's parameters moved together into the trial's config
        text = (Path(result.checkpoint_path(record.number)) / "model.txt").read_text()
        chosen = record.config["parameter_set_0"]
        assert text == f"{chosen['units']} {chosen['batch']}"


def test_bad_optimizer_class_is_refused_before_anything_runs(tmp_path: Path) -> None:
    optimizer = HyperParameterOptimizer(
        base_task_id=scored,
        hyper_parameters=[DiscreteParameterRange("lr", [0.1])],
        objective_metric_title="loss",
        optimizer_class=dict,
        storage=f"sqlite:///{tmp_path / 'hpo.db'}",
    )
    with pytest.raises(PrefectHPOError, match=r"optimizer_class .* is not one of .*OptimizerOptuna"):
        optimizer.start()
    with pytest.raises(PrefectHPOError, match="call start\\(\\) first"):
        optimizer.wait()
    assert GridSearch.strategy == "grid" and OptimizerBOHB.strategy == "bohb"
