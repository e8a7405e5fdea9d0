"""Early stopping end to end: schedulers inside real trials (threads and processes), curves, plots, BOHB."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from prefect_hpo import Budget, Float, SqlTrialStore, TrialState, sweep
from prefect_hpo.errors import PrefectHPOError, StrategyError
from prefect_hpo.objective import Objective
from prefect_hpo.records import Config
from prefect_hpo.schedulers import ASHAScheduler
from prefect_hpo.space import SearchSpace
from prefect_hpo.strategies import BohbStrategy, OptunaStrategy, build_strategy
from prefect_hpo.trial import Trial

pytestmark = pytest.mark.prefect
SPACE = {"q": Float(0.0, 1.0)}


def curve(config: Config, trial: Trial) -> None:
    """Loss falls with epochs towards q: the final ranking is visible early, as ASHA assumes."""
    for epoch in range(1, 28):
        trial.report(epoch, loss=config["q"] + 1.0 / epoch, acc=1 - config["q"])


def test_asha_stops_bad_trials_at_rungs_and_completes_good_ones(sqlite_url: str) -> None:
    result = sweep(
        curve,
        SPACE,
        "loss",
        "random",
        Budget(max_trials=20, max_concurrent=2),
        storage=sqlite_url,
        scheduler=ASHAScheduler(max_t=27, grace_period=1, reduction_factor=3),
        seed=0,
        workers="threads",
    )
    pruned = [r for r in result.records if r.state == TrialState.PRUNED]
    complete = [r for r in result.records if r.state == TrialState.COMPLETE]
    assert pruned and complete and len(pruned) + len(complete) == 20
    assert all(r.last_step in (1, 3, 9) and "rung" in (r.reason or "") for r in pruned)
    assert all(r.last_step == 27 and "max_steps=27" in (r.reason or "") for r in complete)
    steps = sum(r.last_step or 0 for r in result.records)
    assert steps < 20 * 27 * 0.6, f"ASHA ran {steps} steps, FIFO would run {20 * 27}"
    assert result.best_config is not None and result.best_config["q"] == min(r.config["q"] for r in complete)
    store = SqlTrialStore(sqlite_url)
    assert all(r.stop_requested == r.reason for r in store.trials(1, [TrialState.PRUNED]))
    assert len(store.rungs(1)) >= 20  # every trial reached rung 1


def test_decisions_are_made_inside_worker_processes(sqlite_url: str) -> None:
    result = sweep(
        curve,
        SPACE,
        "loss",
        "random",
        Budget(max_trials=10, max_concurrent=2),
        storage=sqlite_url,
        scheduler={"type": "asha", "max_t": 27, "grace_period": 3},
        seed=1,
        workers="processes",
    )
    states = {r.state for r in result.records}
    assert states == {TrialState.PRUNED, TrialState.COMPLETE}
    assert {r.worker for r in result.records} - {None} and all(r.worker for r in result.records)


def test_hyperband_records_brackets_and_max_mode(sqlite_url: str) -> None:
    result = sweep(
        curve,
        SPACE,
        Objective("acc", "max"),
        "random",
        Budget(max_trials=24, max_concurrent=2),
        storage=sqlite_url,
        scheduler={"type": "hyperband", "max_t": 27},
        seed=2,
        workers="threads",
    )
    assert len({r.bracket for r in result.records}) >= 2
    pruned = [r for r in result.records if r.state == TrialState.PRUNED]
    complete = [r for r in result.records if r.state == TrialState.COMPLETE]
    assert pruned and complete
    # maximising acc = 1 - q: stopped trials are the ones with larger q than the best completed
    assert min(r.config["q"] for r in complete) <= min(r.config["q"] for r in pruned)


def test_median_rule_and_min_steps(sqlite_url: str) -> None:
    result = sweep(
        curve,
        SPACE,
        "loss",
        "random",
        Budget(max_trials=12, max_concurrent=1, min_steps=5, max_steps=10),  # one slot: the same decisions every run
        storage=sqlite_url,
        scheduler="median",
        seed=3,
        workers="threads",
    )
    pruned = [r for r in result.records if r.state == TrialState.PRUNED]
    assert pruned and all((r.last_step or 0) >= 5 for r in pruned)  # nobody stopped inside min_steps
    assert all(r.last_step == 10 for r in result.records if r.state == TrialState.COMPLETE)


def test_curves_and_plot(sqlite_url: str, tmp_path: Path) -> None:
    result = sweep(
        curve,
        SPACE,
        "loss",
        "random",
        Budget(max_trials=8, max_concurrent=2),
        storage=sqlite_url,
        scheduler="asha",
        seed=4,
        workers="threads",
    )
    curves = result.curves()
    assert {"number", "state", "step", "loss", "acc"} <= set(curves.columns)
    assert len(curves) == sum(r.last_step or 0 for r in result.records)
    assert set(curves[curves["state"] == "PRUNED"]["number"]) == {
        r.number for r in result.records if r.state == TrialState.PRUNED
    }
    png = result.plot_curves(tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    with pytest.raises(ValueError, match="no reports of metric 'f1'"):
        result.plot_curves(tmp_path / "x.png", metric="f1")


def test_bohb_is_its_own_strategy_and_tpe_stays_optunas_under_a_scheduler(sqlite_url: str) -> None:
    space = SearchSpace.build(SPACE)
    objectives = (Objective("loss"),)
    assert isinstance(build_strategy("bohb", space, objectives, rung_levels=(1, 3, 9)), BohbStrategy)
    tpe = build_strategy("tpe", space, objectives, rung_levels=(1, 3, 9))
    assert isinstance(tpe, OptunaStrategy) and isinstance(tpe.study.sampler, optuna.samplers.TPESampler)
    with pytest.raises(StrategyError, match=r"'bohb' learns from the rungs.*scheduler='hyperband'"):
        build_strategy("bohb", space, objectives)
    with pytest.raises(StrategyError, match="'bohb' optimises one objective, but 2"):
        build_strategy("bohb", space, (Objective("loss"), Objective("acc", "max")), rung_levels=(1, 3))
    with pytest.raises(PrefectHPOError, match="'bohb' learns from the rungs"):  # before anything is stored
        sweep(curve, SPACE, "loss", "bohb", Budget(max_trials=2), storage=sqlite_url, workers="threads")
    result = sweep(
        curve,
        SPACE,
        "loss",
        "bohb",
        Budget(max_trials=16, max_concurrent=2),
        storage=sqlite_url,
        scheduler="hyperband",
        seed=5,
        workers="threads",
    )
    assert len(result.records) == 16 and result.best_value is not None
    assert result.trials_by_state("PRUNED")  # hyperband stopped some: BOHB had rungs to learn from


def test_tpe_under_asha_learns_where_stopped_trials_stopped(sqlite_url: str) -> None:
    """Optuna's TPE under our ASHA sees each stopped trial as pruned at the step it reached, with its value
    there, as Optuna's own pruners show it."""
    strategy = OptunaStrategy(SearchSpace.build(SPACE), (Objective("loss"),), optuna.samplers.TPESampler(seed=3))
    result = sweep(
        curve,
        SPACE,
        "loss",
        strategy,
        Budget(max_trials=12),
        storage=sqlite_url,
        scheduler={"type": "asha", "max_t": 9, "grace_period": 1, "reduction_factor": 3},
        seed=3,
        workers="threads",
    )
    stopped = {r.number: r.last_step for r in result.records if r.state == TrialState.PRUNED}
    assert stopped, "ASHA stopped no trial: nothing to check"
    pruned = [t for t in strategy.study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(pruned) == len(stopped)
    assert sorted(max(t.intermediate_values) for t in pruned) == sorted(stopped.values())


def test_bohb_proposes_from_the_largest_budget_with_enough_points() -> None:
    space = SearchSpace.build({"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)})  # d = 2: 4 points per model
    bohb = BohbStrategy(space, (Objective("loss"),), levels=(1, 3, 9), seed=0)
    assert bohb.model_level is None
    for _ in range(4):
        config = bohb.ask().config
        assert config is not None
        bohb.tell_rung(config, 1, config["x"])
    assert bohb.model_level == 1
    for i in range(4):
        bohb.tell_rung({"x": i / 10, "y": 0.5}, 3, i / 10)
    assert bohb.model_level == 3
    # the level-3 model knows x is best small: its proposals lean that way
    xs = []
    for _ in range(20):
        config = bohb.ask().config
        assert config is not None
        xs.append(config["x"])
        bohb.tell_rung(config, 3, config["x"])
    assert sum(x < 0.5 for x in xs) >= 14


def test_time_attr_makes_a_reported_metric_the_clock(sqlite_url: str) -> None:
    def batches(config: Config, trial: Trial) -> None:
        for epoch in range(1, 10):
            trial.report(epoch * 100, loss=config["q"] + 1.0 / epoch, epoch=epoch)  # steps count batches

    result = sweep(
        batches,
        SPACE,
        "loss",
        "random",
        Budget(max_trials=12, max_concurrent=2),
        storage=sqlite_url,
        scheduler=ASHAScheduler(max_t=9, grace_period=1, reduction_factor=3, time_attr="epoch"),
        seed=6,
        workers="threads",
    )
    pruned = [r for r in result.records if r.state == TrialState.PRUNED]
    complete = [r for r in result.records if r.state == TrialState.COMPLETE]
    assert pruned and complete
    assert all(r.last_step in (100, 300) for r in pruned)  # rungs at epochs 1 and 3
    assert all(r.last_step == 900 and "epoch=9 >= max_t=9" in (r.reason or "") for r in complete)
    with pytest.raises(PrefectHPOError, match="time_attr works with mode='stopping'"):
        ASHAScheduler(time_attr="epoch", mode="promotion")


def test_a_step_budget_counts_the_steps_really_run(sqlite_url: str) -> None:
    result = sweep(
        curve,
        SPACE,
        "loss",
        "random",
        Budget(max_trials=None, max_total_steps=100, max_concurrent=2),
        storage=sqlite_url,
        scheduler=ASHAScheduler(max_t=27, grace_period=1),
        seed=7,
        workers="threads",
    )
    steps = sum(r.last_step or 0 for r in result.records)
    assert 100 <= steps <= 101  # each trial checks the budget at every report: at most one step per slot over
    assert result.stop_reason == "max_total_steps=100 reached"
    assert result.budget["steps"] == {"limit": 100, "used": steps, "left": 0}
    # a trial that stopped anywhere but a rung (1, 3, 9) or max_t was cut by the step budget, and says so
    for r in result.records:
        if r.last_step not in (1, 3, 9, 27):
            assert r.state == TrialState.PRUNED and "max_total_steps=100" in (r.reason or "")
    assert len(result.records) > 100 // 27  # early stopping let more configurations in than full runs would


def test_a_step_budget_cuts_the_trials_running_when_it_is_spent(sqlite_url: str) -> None:
    # without early stopping finished trials hold multiples of 27 steps, and 100 is none: whichever
    # trials are running when the budget is spent are cut short, with the budget as their reason
    result = sweep(
        curve,
        SPACE,
        "loss",
        "random",
        Budget(max_trials=None, max_total_steps=100, max_concurrent=2, max_steps=27),
        storage=sqlite_url,
        seed=7,
        workers="threads",
    )
    cut = [r for r in result.records if r.last_step != 27]
    assert cut and all(r.state == TrialState.PRUNED and "max_total_steps=100" in (r.reason or "") for r in cut)
    assert 100 <= sum(r.last_step or 0 for r in result.records) <= 101
