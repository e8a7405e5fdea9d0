"""Population-based training end to end: generations, exploit and explore, checkpoints passed on, lineage."""

from __future__ import annotations

import warnings
from pathlib import Path

import cloudpickle
import pytest

from benchmarks.problems import noisy_sgd_trial
from prefect_hpo import Budget, Float, TrialState, sweep, wait_for_plots
from prefect_hpo.errors import PrefectHPOError, StrategyError
from prefect_hpo.objective import Objective
from prefect_hpo.options import build_search
from prefect_hpo.records import TrialRecord
from prefect_hpo.schedulers import FIFOScheduler
from prefect_hpo.space import SearchSpace, config_hash
from prefect_hpo.strategies import WAIT, Exhausted, Suggestion, build_strategy, strategy_name
from prefect_hpo.strategies.pbt import PBTStrategy


def test_a_population_trains_in_generations_and_passes_checkpoints_on(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    result = sweep(
        noisy_sgd_trial,
        {"lr": Float(1e-3, 0.5, log=True)},
        "loss",
        budget=Budget(max_trials=100, max_concurrent=4),
        storage=f"sqlite:///{tmp_path / 'hpo.db'}",
        name="pbt",
        strategy={"type": "pbt", "population": 4, "interval": 5, "generations": 4, "quantile": 0.25},
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
        with open(f"{result.checkpoint_path(record.number)}/checkpoint.pkl", "rb") as f:
            state = cloudpickle.load(f)
        assert state["step"] == lineage["end_step"] and state["path"][-2:] == [parent.number, record.number]
    exploits = [r for r in records.values() if r.lineage and "exploited" in r.lineage]
    assert len(exploits) == 3  # one member (the bottom quarter of 4) per generation after the first
    assert wait_for_plots(timeout=120)
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
            strategy={"type": "pbt", "population": 4},
        )


def _ended(suggestion: Suggestion, number: int, value: float) -> TrialRecord:
    """The trial a suggestion became, finished with `value`."""
    config = suggestion.config
    return TrialRecord(
        id=number,
        sweep_id=1,
        number=number,
        config=config,
        config_hash=config_hash(config),
        state=TrialState.COMPLETE,
        values=(value,),
        lineage=suggestion.stored_lineage(),
    )


def test_pbt_answers_suggestions_that_carry_parent_steps_and_lineage() -> None:
    space = SearchSpace.build({"lr": Float(1e-3, 0.5, log=True)})
    pbt = PBTStrategy(space, Objective("loss"), population=2, interval=3, generations=2, quantile=0.5, seed=0)
    first = [pbt.ask(), pbt.ask()]
    assert all(isinstance(s, Suggestion) for s in first)
    assert [(s.parent, s.resume_step, s.end_step, s.may_repeat) for s in first] == [(None, None, 3, True)] * 2
    assert first[1].stored_lineage() == {"member": 1, "generation": 0, "parent": None, "start_step": 0, "end_step": 3}
    assert pbt.ask() is WAIT  # the next generation waits for this one's results
    for number, (suggestion, value) in enumerate(zip(first, (0.1, 0.9), strict=True)):
        pbt.tell(_ended(suggestion, number, value))
    goes_on, exploits = pbt.ask(), pbt.ask()
    assert isinstance(goes_on, Suggestion) and isinstance(exploits, Suggestion)
    assert (goes_on.parent, goes_on.resume_step, goes_on.end_step) == (0, 3, 6)
    assert goes_on.config == first[0].config and goes_on.lineage == {"member": 0, "generation": 1}
    assert (exploits.parent, exploits.resume_step) == (0, 3)  # the worse member takes over the better one's
    assert exploits.lineage is not None and (exploits.lineage["exploited"], exploits.lineage["replaced"]) == (0, 1)
    assert pbt.ask() is WAIT
    pbt.tell(_ended(goes_on, 2, 0.05))
    pbt.tell(_ended(exploits, 3, 0.07))
    assert pbt.ask() == Exhausted("population-based training finished its 2 generations")


def test_pbt_is_a_strategy_and_scheduler_pbt_an_alias_that_warns_once_with_the_fix() -> None:
    space = SearchSpace.build({"lr": Float(1e-3, 0.5, log=True)})
    loss = (Objective("loss"),)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling warns of nothing
        stopper, searcher = build_search({"type": "pbt", "population": 4}, None, space, loss, 0, 5)
        assert isinstance(stopper, FIFOScheduler) and isinstance(searcher, PBTStrategy) and searcher.population == 4
        assert isinstance(build_search("pbt", "fifo", space, loss, 0, 5)[1], PBTStrategy)
    with pytest.warns(DeprecationWarning) as caught:
        stopper, searcher = build_search("tpe", {"type": "pbt", "population": 4}, space, loss, 0, 5)
    assert isinstance(stopper, FIFOScheduler) and isinstance(searcher, PBTStrategy) and searcher.population == 4
    assert [str(w.message) for w in caught] == [
        "scheduler={'type': 'pbt', 'population': 4} is deprecated: population-based training is a strategy; "
        "pass strategy={'type': 'pbt', 'population': 4} and leave scheduler unset"
    ]
    assert caught[0].filename == __file__  # pointed at the caller's line, where Python shows it
    with pytest.warns(DeprecationWarning, match="pass strategy='pbt' and leave scheduler unset"):
        build_search("tpe", "pbt", space, loss, 0, 5)
    with pytest.raises(StrategyError, match=r"strategy 'pbt' .* takes no scheduler \(got 'asha'\); leave scheduler"):
        build_search("pbt", "asha", space, loss, 0, 5)
    with pytest.raises(StrategyError, match=r"strategy 'tpe' takes no options in a dict \(got \['n'\]\)"):
        build_strategy({"type": "tpe", "n": 3}, space, loss)
    with pytest.raises(StrategyError, match="names it under 'type'"):
        build_strategy({"population": 3}, space, loss)
    assert strategy_name({"type": "pbt", "population": 4}) == "pbt"


def test_strategy_pbt_runs_a_sweep(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="scheduler=")  # no deprecation on this path
        result = sweep(
            noisy_sgd_trial,
            {"lr": Float(1e-3, 0.5, log=True)},
            "loss",
            strategy={"type": "pbt", "population": 2, "interval": 2, "generations": 2, "quantile": 0.5},
            budget=Budget(max_trials=10, max_concurrent=2),
            storage=f"sqlite:///{tmp_path / 'hpo.db'}",
            seed=0,
            workers="threads",
            checkpoints=str(tmp_path / "checkpoints"),
            artifact_interval=None,
        )
    assert [r.state for r in result.records] == [TrialState.COMPLETE] * 4
    assert result.stop_reason == "population-based training finished its 2 generations"
    assert [r.lineage and r.lineage["generation"] for r in result.records] == [0, 0, 1, 1]
