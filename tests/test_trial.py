"""The trial runtime: every way a training function can end becomes the right Outcome."""

from __future__ import annotations

import math
from typing import Any

import pytest

from prefect_hpo.errors import TrialFunctionError
from prefect_hpo.objective import Objective
from prefect_hpo.records import TrialState
from prefect_hpo.store import SqlTrialStore
from prefect_hpo.trial import Trial, TrialSpec, run_training, wants_trial


@pytest.fixture
def store_and_trial(sqlite_url: str) -> tuple[SqlTrialStore, int]:
    store = SqlTrialStore(sqlite_url)
    sid = store.open_sweep("t", space={}, objectives=[], strategy="x", budget={})
    rec = store.create_trial(sid, 0, {"x": 1}, "h")
    return store, rec.id


def spec(
    trial_id: int, objectives: tuple[Objective, ...] = (Objective("loss"),), max_steps: int | None = None
) -> TrialSpec:
    return TrialSpec(trial_id, 0, "t", {"x": 1}, objectives, max_steps, True)


def run(store_and_trial: tuple[SqlTrialStore, int], fn: Any, **kw: Any) -> Any:
    store, tid = store_and_trial
    return run_training(fn, spec(tid, **kw), store)


def test_bare_number_and_dict(store_and_trial: tuple[SqlTrialStore, int]) -> None:
    out = run(store_and_trial, lambda c, t: 0.25)
    assert out.state == TrialState.COMPLETE and out.values == (0.25,)
    out = run(store_and_trial, lambda c, t: {"loss": 1, "acc": 0.5})
    assert out.values == (1.0,) and out.metrics == {"loss": 1.0, "acc": 0.5}


def test_returning_nothing_uses_the_last_report(store_and_trial: tuple[SqlTrialStore, int]) -> None:
    def train(config: dict, trial: Trial) -> None:
        for step in range(3):
            trial.report(step, loss=3.0 - step)

    out = run(store_and_trial, train)
    assert out.state == TrialState.COMPLETE and out.values == (1.0,) and out.last_step == 2
    store, _ = store_and_trial
    assert len(store.reports(1)) == 3


@pytest.mark.parametrize(
    ("result", "needle"),
    [
        ("good", "return a number or a dict of numbers"),
        ({"loss": "low"}, "'loss': 'low', which is not a number"),
        ({"acc": 0.9}, "never produced objective metric 'loss'"),
        ([0.1], "return a number or a dict"),
    ],
)
def test_bad_results_fail_with_a_reason(store_and_trial: tuple[SqlTrialStore, int], result: Any, needle: str) -> None:
    out = run(store_and_trial, lambda c, t: result)
    assert out.state == TrialState.FAIL and needle in (out.error or "")


def test_nan_and_inf_objectives_fail(store_and_trial: tuple[SqlTrialStore, int]) -> None:
    for bad in (math.nan, math.inf):
        out = run(store_and_trial, lambda c, t, bad=bad: bad)
        assert out.state == TrialState.FAIL and "not a finite number" in (out.error or "")


def test_exception_keeps_its_traceback(store_and_trial: tuple[SqlTrialStore, int]) -> None:
    def train(config: dict, trial: Trial) -> float:
        trial.report(1, loss=0.5)
        raise RuntimeError("diverged at epoch 1")

    out = run(store_and_trial, train)
    assert out.state == TrialState.FAIL and "RuntimeError: diverged at epoch 1" in (out.error or "")
    assert "Traceback" in (out.error or "") and out.last_step == 1


def test_max_steps_stops_the_trial_as_complete(store_and_trial: tuple[SqlTrialStore, int]) -> None:
    seen: list[int] = []

    def train(config: dict, trial: Trial) -> float:
        for step in range(1, 100):
            seen.append(step)
            trial.report(step, loss=1.0 / step)
        return 0.0

    out = run(store_and_trial, train, max_steps=4)
    assert seen == [1, 2, 3, 4]
    assert out.state == TrialState.COMPLETE and out.values == (0.25,) and "max_steps=4" in (out.reason or "")


def test_stop_request_ends_the_trial_as_pruned(store_and_trial: tuple[SqlTrialStore, int]) -> None:
    store, tid = store_and_trial

    def train(config: dict, trial: Trial) -> float:
        trial.report(1, loss=0.9)
        store.request_stop(tid, "sweep stopped: time_limit")
        assert trial.should_stop()
        trial.report(2, loss=0.8)
        raise AssertionError("report must have raised TrialStopped")

    out = run(store_and_trial, train)
    assert out.state == TrialState.PRUNED and out.reason == "sweep stopped: time_limit" and out.values == (0.8,)


def test_multi_objective_needs_a_dict(store_and_trial: tuple[SqlTrialStore, int]) -> None:
    objs = (Objective("loss"), Objective("acc", "max"))
    out = run(store_and_trial, lambda c, t: 0.5, objectives=objs)
    assert out.state == TrialState.FAIL and "2 objectives" in (out.error or "")
    out = run(store_and_trial, lambda c, t: {"loss": 0.5, "acc": 0.7}, objectives=objs)
    assert out.values == (0.5, 0.7)


def test_report_validates_its_arguments(store_and_trial: tuple[SqlTrialStore, int]) -> None:
    def train(config: dict, trial: Trial) -> float:
        trial.report(1.5, loss=1.0)  # type: ignore[arg-type]
        return 0.0

    out = run(store_and_trial, train)
    assert out.state == TrialState.FAIL and "step must be an integer" in (out.error or "")


def test_signatures() -> None:
    assert wants_trial(lambda config, trial: 0) is True
    assert wants_trial(lambda config: 0) is False
    assert wants_trial(lambda config, trial=None: 0) is True
    with pytest.raises(TrialFunctionError, match=r"must take \(config\) or \(config, trial\)"):
        wants_trial(lambda: 0)
    with pytest.raises(TrialFunctionError, match="must take"):
        wants_trial(lambda a, b, c: 0)
    with pytest.raises(TrialFunctionError, match="callable"):
        wants_trial(42)  # type: ignore[arg-type]
