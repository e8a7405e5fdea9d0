"""The controller handle: a sweep in the background, watched and steered from the caller's thread."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from prefect_hpo import Budget, Float, PrefectHPOError, TrialState, start_sweep
from prefect_hpo.records import Config
from prefect_hpo.trial import Trial

pytestmark = pytest.mark.prefect


def slow(config: Config, trial: Trial) -> float:
    """Reports a step every 50 ms, for as many steps as the config says."""
    for step in range(1, int(config["steps"]) + 1):
        time.sleep(0.05)
        trial.report(step, loss=config["x"] + 1.0 / step)
    return config["x"]


def wait_until(condition: Any, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_start_watch_and_callback(sqlite_url: str) -> None:
    seen: list[tuple[int, float | None, int | None, Config, int | None]] = []
    ended = threading.Event()

    def on_trial_complete(number: int, value: float | None, step: int | None, config: Config, best: int | None) -> None:
        seen.append((number, value, step, config, best))
        if len(seen) == 6:
            ended.set()

    controller = start_sweep(
        slow,
        {"x": Float(0.0, 1.0), "steps": 3},
        "loss",
        "random",
        Budget(max_trials=6, max_concurrent=2),
        storage=sqlite_url,
        name="watched",
        seed=4,
        workers="threads",
        on_trial_complete=on_trial_complete,
    )
    assert controller.is_running()  # start_sweep returned at once
    wait_until(lambda: controller.active_trials() != [] or not controller.is_running())
    assert controller.wait(timeout=120) and not controller.is_running()
    result = controller.result()
    assert ended.is_set() and sorted(s[0] for s in seen) == list(range(6))
    by_number = {r.number: r for r in result.records}
    for number, value, step, config, best in seen:
        assert value == by_number[number].value and step == 3 and config == by_number[number].config
        assert best is not None and by_number[best].value <= value  # type: ignore[operator]
    assert seen[-1][4] == result.best_trial.number  # type: ignore[union-attr]
    top = controller.top(3)
    assert list(top["number"]) == [r.number for r in sorted(result.records, key=lambda r: r.value or 0)][:3]
    details = controller.top_details(2, all_metrics=True)
    assert details[0]["number"] == result.best_trial.number  # type: ignore[union-attr]
    assert set(details[0]["metrics"]) >= {"loss"} and details[0]["config"] == result.best_config
    assert controller.elapsed() > 0 and not controller.reached_time_limit()
    assert controller.active_trials() == []


def test_stop_cancels_running_trials_and_keeps_results(sqlite_url: str) -> None:
    controller = start_sweep(
        slow,
        {"x": Float(0.0, 1.0), "steps": 400},  # 20 s per trial: only stop() ends them early
        "loss",
        "random",
        Budget(max_trials=4, max_concurrent=2),
        storage=sqlite_url,
        name="stopped",
        workers="threads",
    )
    wait_until(lambda: len(controller.active_trials()) == 2)
    assert controller.stop("a person stopped it", timeout=60)
    result = controller.result()
    assert len(result.records) == 2 and result.stop_reason == "a person stopped it"
    assert all(r.state == TrialState.PRUNED and r.reason and "a person stopped it" in r.reason for r in result.records)
    assert controller.top_details(5, only_completed=False)[0]["state"] == "PRUNED"  # kept, ranked after completed


def test_a_time_limit_set_while_it_runs(sqlite_url: str) -> None:
    controller = start_sweep(
        slow,
        {"x": Float(0.0, 1.0), "steps": 400},
        "loss",
        "random",
        Budget(max_trials=10, max_concurrent=1, time_limit=3600),
        storage=sqlite_url,
        name="time-limited",
        workers="threads",
    )
    wait_until(lambda: len(controller.active_trials()) == 1)
    controller.set_time_limit(controller.elapsed() + 0.5)
    assert controller.wait(timeout=60)
    assert controller.reached_time_limit()
    assert "time_limit" in (controller.result().stop_reason or "")
    with pytest.raises(PrefectHPOError, match="positive number of seconds"):
        controller.set_time_limit(-1)


def test_bad_input_is_refused_before_the_thread_starts(sqlite_url: str) -> None:
    with pytest.raises(PrefectHPOError, match="on_trial_complete must be a callable"):
        start_sweep(slow, {"x": Float(0.0, 1.0)}, storage=sqlite_url, on_trial_complete=3)  # type: ignore[arg-type]
    only_time = start_sweep(
        slow,
        {"x": Float(0.0, 1.0), "steps": 1},
        budget=Budget(max_trials=None, time_limit=30),
        storage=sqlite_url,
        name="only-time",
        workers="threads",
        strategy="random",
    )
    with pytest.raises(PrefectHPOError, match="cannot be raised"):
        only_time.set_time_limit(60)
    only_time.stop(timeout=60)
