"""End to end: `sweep()` as a Prefect flow on the ephemeral server, trials as task runs, real stores."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from prefect_hpo import Budget, Categorical, Float, Int, Objective, SqlTrialStore, TrialState, load_result, sweep
from prefect_hpo.errors import (
    PrefectHPOError,
    SearchSpaceError,
    StoreError,
    SweepConflictError,
    TooManyFailedTrials,
    TrialFunctionError,
)
from prefect_hpo.records import Config, TrialRecord
from prefect_hpo.space import SearchSpace
from prefect_hpo.strategies import build_strategy
from prefect_hpo.trial import Trial

pytestmark = pytest.mark.prefect

SPACE = {"lr": Float(1e-4, 1e-1, log=True), "layers": Int(1, 4), "act": Categorical(["relu", "tanh"])}


def train(config: Config, trial: Trial) -> dict[str, float]:
    loss = 1.0
    for epoch in range(1, 4):
        loss = (
            (math.log10(config["lr"]) + 2) ** 2
            + 0.1 * config["layers"]
            + (0.3 if config["act"] == "tanh" else 0)
            + 1 / epoch
        )
        trial.report(epoch, val_loss=loss, acc=1 - loss / 10)
    return {"val_loss": loss, "acc": 1 - loss / 10}


def flow_run_id(storage: str, name: str) -> str:
    store = SqlTrialStore(storage)
    try:
        return str(store.sweep(store.sweep_id(name))["flow_run_id"])
    finally:
        store.close()


def task_runs_of(client: Any, flow_run_id: str, expected: int, within: float = 30.0) -> list[Any]:
    """The flow run's task runs, once all `expected` are recorded: the server writes them from
    events, a moment after the flow returns."""
    deadline = time.monotonic() + within
    while True:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        done = [t for t in tasks if t.state is not None and t.state.is_final()]
        if len(done) >= expected or time.monotonic() > deadline:
            return list(tasks)
        time.sleep(0.2)


def test_the_issue_example_end_to_end(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    result = sweep(
        train,
        space=SPACE,
        objective=Objective("val_loss", "min"),
        strategy="tpe",
        budget=Budget(max_trials=10, max_concurrent=2),
        storage=storage,
        name="digits-mlp",
        seed=0,
        workers="processes",
    )
    frame = result.trials
    assert list(frame["number"]) == list(range(10)) and set(frame["state"]) == {"COMPLETE"}
    assert {"val_loss", "params_lr", "params_layers", "params_act", "duration", "last_step"} <= set(frame.columns)
    assert result.best_value == frame["val_loss"].min()
    assert result.best_trial is not None and result.best_config == result.best_trial.config
    top = result.top(3)
    assert list(top["val_loss"]) == sorted(frame["val_loss"])[:3]
    assert result.budget["trials"] == {"limit": 10, "used": 10, "left": 0}
    assert result.stop_reason == "max_trials=10 reached"
    # the sweep is a flow run named after the sweep, each trial a task run named after its number
    fid = flow_run_id(storage, "digits-mlp")
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(fid)
        assert run.name == "digits-mlp" and run.state is not None and run.state.is_completed()
        tasks = task_runs_of(client, fid, expected=10)
    assert sorted(t.name for t in tasks) == sorted(f"trial-{i}" for i in range(10))
    assert {str(t.id) for t in tasks} == set(frame["task_run_id"])
    # every report is in the store
    assert len(SqlTrialStore(storage).reports(result.best_trial.sweep_id)) == 30
    # exports
    csv = pd.read_csv(result.to_csv(tmp_path / "t.csv"))
    parquet = pd.read_parquet(result.to_parquet(tmp_path / "t.parquet"))
    assert len(csv) == len(parquet) == 10 and list(parquet["number"]) == list(range(10))


def test_on_postgresql(pg_url: str) -> None:
    result = sweep(
        train, SPACE, "val_loss", "random", Budget(max_trials=6, max_concurrent=3), storage=pg_url, name="pg", seed=1
    )
    assert len(result.records) == 6 and all(r.state == TrialState.COMPLETE for r in result.records)
    assert len(SqlTrialStore(pg_url).reports(result.records[0].sweep_id)) == 18


def quadratic(config: Config) -> float:
    return (config["x"] - 0.3) ** 2 + (0 if config.get("kind") == "a" else 0.5)


def test_grid_ends_cleanly_when_exhausted(sqlite_url: str) -> None:
    space = {"x": Float(0.0, 1.0), "kind": Categorical(["a", "b"])}
    result = sweep(
        quadratic,
        space,
        "loss",
        "grid",
        Budget(max_trials=100, max_concurrent=2),
        storage=sqlite_url,
        grid_resolution=3,
        workers="threads",
    )
    assert len(result.records) == 6 and result.stop_reason == "search space exhausted"
    assert result.best_config == {"x": 0.5, "kind": "a"}


def test_random_on_a_tiny_space_reuses_results_and_stops(sqlite_url: str) -> None:
    space = {"kind": Categorical(["a", "b"]), "x": Categorical([0.0, 0.3])}
    result = sweep(
        quadratic,
        space,
        "loss",
        "random",
        Budget(max_trials=50),
        storage=sqlite_url,
        seed=3,
        workers="threads",
        max_consecutive_duplicates=40,
    )
    complete = [r for r in result.records if r.state == TrialState.COMPLETE]
    duplicates = [r for r in result.records if r.state == TrialState.PRUNED_DUPLICATE]
    assert len(complete) == 4 and len(duplicates) >= 40
    assert "search space exhausted" in (result.stop_reason or "")
    by_number = {r.number: r for r in result.records}
    for dup in duplicates:
        assert dup.duplicate_of is not None and dup.values == by_number[dup.duplicate_of].values
    assert result.budget["trials"]["used"] == 4  # duplicates cost nothing


@pytest.mark.parametrize("strategy", ["grid", "random", "tpe", "gp", "cmaes", "qmc", "nsga2"])
def test_every_strategy_runs_a_sweep(sqlite_url: str, strategy: str) -> None:
    if strategy == "gp":
        pytest.importorskip("torch", reason="strategy 'gp' needs the [gp] extra")
    space = {"x": Float(-1.0, 1.0), "y": Float(-1.0, 1.0)}
    result = sweep(
        lambda c: c["x"] ** 2 + c["y"] ** 2,
        space,
        "loss",
        strategy,
        Budget(max_trials=8, max_concurrent=2),
        storage=sqlite_url,
        seed=0,
        workers="threads",
        name=f"s-{strategy}",
    )
    assert len(result.records) == 8 and result.best_value is not None and result.best_value < 2.0


def test_slots_refill_without_waiting_for_slow_trials(sqlite_url: str) -> None:
    def uneven(config: Config, trial: Trial) -> float:
        time.sleep(2.0 if trial.number == 0 else 0.05)
        return config["x"]

    result = sweep(
        uneven,
        {"x": Float(0, 1)},
        "loss",
        "random",
        Budget(max_trials=12, max_concurrent=2),
        storage=sqlite_url,
        workers="threads",
    )
    slow = result.records[0]
    assert slow.started_at is not None and slow.finished_at is not None
    during = [r for r in result.records[1:] if r.finished_at is not None and r.finished_at < slow.finished_at]
    assert len(during) >= 5, "the free slot should have run many short trials while trial 0 ran"


class CheckingStrategy:
    """Random search that, whenever it is told of a trial, reads it back through a separate connection."""

    def __init__(self, storage: str) -> None:
        self._inner = build_strategy("random", SearchSpace.build({"x": Float(0, 1)}), (Objective("loss"),), seed=0)
        self._reader = SqlTrialStore(storage)
        self.checked = 0

    def ask(self) -> Config | None:
        return self._inner.ask()

    def tell(self, trial: TrialRecord) -> None:
        stored = self._reader.trial(trial.sweep_id, trial.number)
        assert stored.state == trial.state and stored.values == trial.values and stored.state.is_finished
        self.checked += 1
        self._inner.tell(trial)


def test_every_finished_trial_is_in_the_store_the_moment_it_finishes(sqlite_url: str) -> None:
    seen_by_trials: list[int] = []

    def train_checks_predecessors(config: Config, trial: Trial) -> float:
        store = SqlTrialStore(sqlite_url)
        done = [t for t in store.trials(1) if t.state == TrialState.COMPLETE]
        store.close()
        seen_by_trials.append(len(done))
        return config["x"]

    checker = CheckingStrategy(sqlite_url)
    sweep(
        train_checks_predecessors,
        {"x": Float(0, 1)},
        "loss",
        checker,
        Budget(max_trials=6),
        storage=sqlite_url,
        workers="threads",
    )
    assert checker.checked == 6
    assert seen_by_trials == [0, 1, 2, 3, 4, 5]  # one at a time: trial k sees k committed results


def test_time_limit_stops_the_sweep_and_prunes_running_trials(sqlite_url: str) -> None:
    def slow(config: Config, trial: Trial) -> float:
        for step in range(100):
            trial.report(step, loss=config["x"])
            time.sleep(0.1)
        return config["x"]

    start = time.monotonic()
    result = sweep(
        slow,
        {"x": Float(0, 1)},
        "loss",
        "random",
        Budget(max_trials=None, time_limit=2.0, max_concurrent=2),
        storage=sqlite_url,
        workers="threads",
    )
    assert time.monotonic() - start < 30
    assert "time_limit of 2s reached" in (result.stop_reason or "")
    states = {r.state for r in result.records}
    assert states == {TrialState.PRUNED}
    assert all("time_limit" in (r.reason or "") for r in result.records)


def test_compute_time_limit_counts_trial_run_time(sqlite_url: str) -> None:
    def half_second(config: Config) -> float:
        time.sleep(0.5)
        return config["x"]

    result = sweep(
        half_second,
        {"x": Float(0, 1)},
        "loss",
        "random",
        Budget(max_trials=100, compute_time_limit=2.0, max_concurrent=2),
        storage=sqlite_url,
        workers="threads",
    )
    assert "compute_time_limit" in (result.stop_reason or "")
    # it stopped because the trials' run time reached the limit (not their count, nor the wall clock;
    # how many trials that took depends on the machine's load), and started none after. The loop counts a
    # running trial's time from its submission, a record's duration from its code's start: a few ms apart.
    assert sum(r.duration or 0.0 for r in result.records) >= 2.0 - 0.1
    assert 2 <= len(result.records) <= 8


def test_too_many_failures_stop_with_a_clear_error_and_keep_the_tracebacks(sqlite_url: str) -> None:
    def flaky(config: Config) -> float:
        if config["x"] > 0.2:
            raise ValueError(f"x={config['x']:.2f} diverged")
        return config["x"]

    with pytest.raises(TooManyFailedTrials, match="more than max_failed_trials=2"):
        sweep(
            flaky,
            {"x": Float(0, 1)},
            "loss",
            "random",
            Budget(max_trials=30, max_failed_trials=2, fail_fast=None),  # its failures differ only in x
            storage=sqlite_url,
            seed=0,
            workers="threads",
            name="flaky",
        )
    store = SqlTrialStore(sqlite_url)
    sid = store.sweep_id("flaky")
    failed = store.trials(sid, [TrialState.FAIL])
    assert len(failed) == 3 and all("ValueError: x=" in (t.error or "") for t in failed)
    assert store.sweep(sid)["status"] == "failed"


def test_nan_result_fails_the_trial_and_the_sweep_goes_on(sqlite_url: str) -> None:
    result = sweep(
        lambda c: math.nan if c["x"] < 0.5 else c["x"],
        {"x": Float(0, 1)},
        "loss",
        "random",
        Budget(max_trials=10),
        storage=sqlite_url,
        seed=2,
        workers="threads",
    )
    states = [r.state for r in result.records]
    assert TrialState.FAIL in states and TrialState.COMPLETE in states and len(states) == 10
    assert all("not a finite number" in (r.error or "") for r in result.records if r.state == TrialState.FAIL)
    assert result.best_value is not None and result.best_value >= 0.5


def reports_a_step_twice_on_trial_1(config: Config, trial: Trial) -> float:
    for step in (1, 2, 2) if trial.number == 1 else (1, 2, 3):
        trial.report(step, loss=config["x"] + 1 / step)
    return float(config["x"])


@pytest.mark.parametrize("workers", ["processes", "threads"])
def test_a_report_whose_step_does_not_increase_fails_that_trial_only(sqlite_url: str, workers: str) -> None:
    result = sweep(
        reports_a_step_twice_on_trial_1,
        {"x": Float(0, 1)},
        strategy="random",
        budget=Budget(max_trials=4, max_concurrent=2),
        storage=sqlite_url,
        seed=3,
        workers=workers,  # type: ignore[arg-type]
    )
    states = {r.number: r.state for r in result.records}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.FAIL, 2: TrialState.COMPLETE, 3: TrialState.COMPLETE}
    error = (result.records[1].error or "").strip().splitlines()[-1]
    assert error.startswith("ValueError: trial.report: step 2 is not greater than the previous step 2"), error
    assert [r.step for r in SqlTrialStore(sqlite_url).reports(result.records[1].sweep_id, 1)] == [1, 2]


def test_trial_time_limit_and_max_steps(sqlite_url: str) -> None:
    def epochs(config: Config, trial: Trial) -> None:
        for step in range(1, 1000):
            trial.report(step, loss=1 / step)
            if config["hang"]:
                time.sleep(0.05)

    space = {"hang": Categorical([True, False])}
    result = sweep(
        epochs,
        space,
        "loss",
        "grid",
        Budget(max_trials=2, max_steps=5, trial_time_limit=1.0),
        storage=sqlite_url,
        workers="threads",
    )
    by_hang = {r.config["hang"]: r for r in result.records}
    assert by_hang[False].state == TrialState.COMPLETE and by_hang[False].last_step == 5 and by_hang[False].value == 0.2
    # the hanging one reaches max_steps too (5 x 0.05 s < 1 s): both finish by steps
    assert by_hang[True].state == TrialState.COMPLETE and by_hang[True].last_step == 5


def test_multi_objective_pareto_front(sqlite_url: str) -> None:
    def two(config: Config) -> dict[str, float]:
        return {"loss": config["x"], "cost": 1 - config["x"]}

    result = sweep(
        two,
        {"x": Float(0, 1)},
        [Objective("loss"), Objective("cost")],
        "nsga2",
        Budget(max_trials=8),
        storage=sqlite_url,
        seed=0,
        workers="threads",
    )
    front = result.pareto_front()
    assert len(front) == 8  # every point of the line loss + cost = 1 is optimal

    def dominated(c: Config) -> dict[str, float]:
        return {"loss": c["x"], "cost": 2.0 if c["x"] > 0.5 else 0.0}

    result = sweep(
        dominated,
        {"x": Float(0, 1)},
        [Objective("loss"), Objective("cost")],
        "random",
        Budget(max_trials=10),
        storage=sqlite_url,
        seed=0,
        workers="threads",
        name="dominated",
    )
    assert list(result.pareto_front()["loss"]) == [min(r.values[0] for r in result.records if r.values)]


def test_sweep_as_a_subflow(sqlite_url: str) -> None:
    @flow
    def pipeline() -> float:
        result = sweep(
            quadratic,
            {"x": Float(0, 1)},
            "loss",
            "random",
            Budget(max_trials=3),
            storage=sqlite_url,
            name="inner",
            workers="threads",
        )
        assert result.best_value is not None
        return result.best_value

    assert pipeline() >= 0
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id(sqlite_url, "inner"))
    assert run.parent_task_run_id is not None


def test_reusing_a_name_continues_the_numbering(sqlite_url: str) -> None:
    kwargs: dict[str, Any] = dict(
        space={"x": Float(0, 1)},
        objective="loss",
        strategy="random",
        storage=sqlite_url,
        name="again",
        workers="threads",
    )
    sweep(quadratic, budget=Budget(max_trials=3), **kwargs)
    result = sweep(quadratic, budget=Budget(max_trials=5), **kwargs)
    assert [r.number for r in result.records] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_a_seeded_sweep_is_reproducible_end_to_end(tmp_path: Path, strategy: str) -> None:
    def run(folder: str) -> list[Config]:
        (tmp_path / folder).mkdir()
        result = sweep(
            quadratic,
            {"x": Float(0, 1), "k": Categorical(["a", "b", "c"])},
            "loss",
            strategy,
            Budget(max_trials=6),
            storage=f"sqlite:///{tmp_path / folder / 'hpo.db'}",
            seed=11,
            workers="threads",
            artifact_interval=None,
        )
        return [r.config for r in result.records]

    assert run("first") == run("second")


def test_a_seeded_random_sweep_continued_in_pieces_proposes_what_one_run_would(tmp_path: Path) -> None:
    def run(folder: str, pieces: list[int]) -> list[Config]:
        (tmp_path / folder).mkdir()
        for max_trials in pieces:
            result = sweep(
                quadratic,
                {"x": Float(0, 1), "k": Categorical(["a", "b", "c"])},
                "loss",
                "random",
                Budget(max_trials=max_trials),
                storage=f"sqlite:///{tmp_path / folder / 'hpo.db'}",
                name="pieces",
                seed=5,
                workers="threads",
                artifact_interval=None,
            )
        return [r.config for r in result.records]

    whole = run("whole", [7])
    assert run("pieces", [2, 3, 7]) == whole and len({str(c) for c in whole}) == 7


def test_a_new_space_under_a_used_name_is_refused_or_forked(sqlite_url: str) -> None:
    kwargs: dict[str, Any] = dict(objective="loss", strategy="random", storage=sqlite_url, name="forked")
    first = sweep(quadratic, {"x": Float(0, 1)}, budget=Budget(max_trials=2), workers="threads", **kwargs)
    with pytest.raises(SweepConflictError, match="pass fork=True"):
        sweep(quadratic, {"x": Float(0, 2)}, budget=Budget(max_trials=2), workers="threads", **kwargs)
    fork = sweep(quadratic, {"x": Float(0, 2)}, budget=Budget(max_trials=2), workers="threads", fork=True, **kwargs)
    assert fork.name == "forked-fork-1" and len(fork.records) == 2
    assert load_result("forked", sqlite_url).records == first.records  # the original is kept as it was


def test_bad_input_fails_before_anything_is_stored(sqlite_url: str, tmp_path: Path) -> None:
    with pytest.raises(SearchSpaceError, match="'lr'"):
        sweep(quadratic, {"lr": Float(1, 0)}, storage=sqlite_url)
    with pytest.raises(TrialFunctionError, match="must take"):
        sweep(lambda: 0, {"x": Float(0, 1)}, storage=sqlite_url)
    with pytest.raises(PrefectHPOError, match="max_retries must be a non-negative integer"):
        sweep(quadratic, {"x": Float(0, 1)}, storage=sqlite_url, max_retries=-1)
    with pytest.raises(StoreError, match="cannot reach storage"):
        sweep(quadratic, {"x": Float(0, 1)}, storage="postgresql+psycopg://u:pw@127.0.0.1:1/db")
    assert SqlTrialStore(sqlite_url).sweep_names() == []


def _small_x(config: Config) -> bool | str:
    return True if config["x"] <= 0.5 else f"x={config['x']:.3f} is above 0.5"


def test_a_constraint_rejects_configurations_before_they_run(sqlite_url: str) -> None:
    result = sweep(
        quadratic,
        {"x": Float(0.0, 1.0)},
        "loss",
        "tpe",
        Budget(max_trials=8),
        storage=sqlite_url,
        seed=4,
        workers="threads",
        constraint=_small_x,
        artifact_interval=None,
    )
    ran, rejected = result.trials_by_state("COMPLETE"), result.trials_by_state(TrialState.PRUNED_INVALID)
    assert len(ran) == 8 and all(r.config["x"] <= 0.5 for r in ran)  # rejections cost no budget
    assert rejected and all(r.config["x"] > 0.5 for r in rejected)
    assert all(r.reason == f"x={r.config['x']:.3f} is above 0.5" for r in rejected)
    assert result.trials_by_state("PRUNED_POOR_PERFORMANCE") == result.trials_by_state(TrialState.PRUNED)
    with pytest.raises(PrefectHPOError, match="'DONE' is not a trial state"):
        result.trials_by_state("DONE")


def test_a_constraint_that_rejects_everything_ends_the_sweep_with_a_clear_reason(sqlite_url: str) -> None:
    result = sweep(
        quadratic,
        {"x": Float(0.0, 1.0)},
        "loss",
        "random",
        Budget(max_trials=5),
        storage=sqlite_url,
        workers="threads",
        constraint=lambda config: False,
        max_rejections_in_a_row=7,
        artifact_interval=None,
    )
    assert [r.state for r in result.records] == [TrialState.PRUNED_INVALID] * 7
    assert result.stop_reason is not None and "the constraint rejected 7 configurations in a row" in result.stop_reason
    with pytest.raises(PrefectHPOError, match="constraint must be a callable"):
        sweep(quadratic, {"x": Float(0, 1)}, storage=sqlite_url, constraint=3)  # type: ignore[arg-type]
