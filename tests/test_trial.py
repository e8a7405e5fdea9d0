"""The trial handle: what `trial.report` checks and stores, when it stops the trial, how a training
function takes the handle."""

from __future__ import annotations

import pytest

from prefect_hpo.errors import TrialFunctionError
from prefect_hpo.objective import Objective
from prefect_hpo.records import TrialState
from prefect_hpo.store import SqlTrialStore
from prefect_hpo.training import run_training
from prefect_hpo.trial import Trial, TrialSpec, wants_trial
from tests.trial_runs import open_store_and_trial, run


@pytest.fixture
def store_and_trial(sqlite_url: str) -> tuple[SqlTrialStore, int]:
    return open_store_and_trial(sqlite_url)


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


def test_report_validates_its_arguments(store_and_trial: tuple[SqlTrialStore, int]) -> None:
    def train(config: dict, trial: Trial) -> float:
        trial.report(1.5, loss=1.0)  # type: ignore[arg-type]
        return 0.0

    out = run(store_and_trial, train)
    assert out.state == TrialState.FAIL and "step must be an integer" in (out.error or "")


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((3, 2), "step 2 is not greater than the previous step 3"),
        ((3, 3), "step 3 is not greater than the previous step 3"),
        ((-1,), "step -1 is negative"),
    ],
    ids=["decreasing", "repeated", "negative"],
)
def test_report_steps_must_increase(
    store_and_trial: tuple[SqlTrialStore, int], steps: tuple[int, ...], message: str
) -> None:
    """A step not above the last (or below 0) fails the trial with its reason; nothing of it is stored."""

    def train(config: dict, trial: Trial) -> float:
        for step in steps:
            trial.report(step, loss=1.0)
        return 0.0

    out = run(store_and_trial, train)
    assert out.state == TrialState.FAIL
    last_line = (out.error or "").strip().splitlines()[-1]
    assert last_line.startswith("ValueError: trial.report: ") and message in last_line, last_line
    assert "each report's step must be greater than the one before" in last_line
    store, _ = store_and_trial
    assert [r.step for r in store.reports(1)] == list(steps[:-1])


def test_a_resumed_attempt_counts_its_steps_afresh(store_and_trial: tuple[SqlTrialStore, int]) -> None:
    """A retried trial whose training function starts over (no checkpoint) may report its first steps again."""
    store, tid = store_and_trial
    resumed = TrialSpec(tid, 0, "t", {"x": 1}, (Objective("loss"),), None, True, attempt=2, resume_step=5)

    def train(config: dict, trial: Trial) -> float:
        for step in (1, 2):
            trial.report(step, loss=1.0)
        return 0.0

    assert run_training(train, resumed, store).state == TrialState.COMPLETE


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


def test_a_report_too_large_for_a_float_fails_its_trial_with_the_metric_named(
    store_and_trial: tuple[SqlTrialStore, int],
) -> None:
    out = run(store_and_trial, lambda c, t: t.report(1, loss=10**400))
    assert out.state == TrialState.FAIL
    assert "trial.report: metric 'loss' is an int of 401 digits, " in (out.error or "") and "too large for a float" in (
        out.error or ""
    )
