"""Population-based training end to end: generations, exploit and explore, checkpoints passed on, lineage."""

from __future__ import annotations

from pathlib import Path

import cloudpickle
import pytest

from benchmarks.problems import noisy_sgd_trial
from prefect_hpo import Budget, Float, TrialState, sweep
from prefect_hpo.errors import PrefectHPOError, StrategyError
from prefect_hpo.objective import Objective
from prefect_hpo.space import SearchSpace
from prefect_hpo.strategies.pbt import PBTStrategy
from prefect_hpo.trial import checkpoint_path


def test_a_population_trains_in_generations_and_passes_checkpoints_on(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    result = sweep(
        noisy_sgd_trial,
        {"lr": Float(1e-3, 0.5, log=True)},
        "loss",
        budget=Budget(max_trials=100, max_concurrent=4),
        storage=f"sqlite:///{tmp_path / 'hpo.db'}",
        name="pbt",
        scheduler={"type": "pbt", "population": 4, "interval": 5, "generations": 4, "quantile": 0.25},
        seed=2,
        workers="threads",
        checkpoints=str(checkpoints),
    )
    records = {r.number: r for r in result.records}
    assert len(records) == 16 and all(r.state == TrialState.COMPLETE for r in records.values())
    assert result.stop_reason == "population-based training finished its 4 generations"
    for record in records.values():
        lineage = record.lineage
        assert lineage is not None and record.last_step == lineage["end_step"] == lineage["start_step"] + 5
        generation, member = lineage["generation"], lineage["member"]
        if generation == 0:
            assert lineage["parent"] is None
            continue
        parent = records[lineage["parent"]]
        assert parent.lineage is not None and parent.lineage["generation"] == generation - 1
        if "exploited" in lineage:  # took over a better member: its checkpoint, a perturbed configuration
            replaced = records[lineage["replaced"]]
            assert parent.value is not None and replaced.value is not None and parent.value <= replaced.value
            assert parent.lineage["member"] != member
        else:  # went on as itself
            assert parent.lineage["member"] == member and parent.config == record.config
        # the checkpoint it trained from was its parent's: the trials it passed through, in order
        with open(f"{checkpoint_path(str(checkpoints), 'pbt', record.number)}/checkpoint.pkl", "rb") as f:
            state = cloudpickle.load(f)
        assert state["step"] == lineage["end_step"] and state["path"][-2:] == [parent.number, record.number]
    exploits = [r for r in records.values() if r.lineage and "exploited" in r.lineage]
    assert len(exploits) == 3  # one member (the bottom quarter of 4) per generation after the first
    assert "lineage" in (p.stem for p in (tmp_path / "plots").rglob("*.png"))


def test_pbt_refuses_bad_options_and_a_budget_that_cuts_it_short(tmp_path: Path) -> None:
    space = SearchSpace.build({"lr": Float(1e-3, 0.5, log=True)})
    with pytest.raises(StrategyError, match="pbt: population must be an integer >= 2"):
        PBTStrategy(space, Objective("loss"), population=1)
    with pytest.raises(StrategyError, match="pbt: quantile must be in"):
        PBTStrategy(space, Objective("loss"), quantile=0.9)
    with pytest.raises(PrefectHPOError, match="population x generations = 4 x 10 = 40"):
        sweep(
            noisy_sgd_trial,
            {"lr": Float(1e-3, 0.5, log=True)},
            "loss",
            budget=Budget(max_trials=20),
            storage=f"sqlite:///{tmp_path / 'hpo.db'}",
            scheduler={"type": "pbt", "population": 4},
        )
