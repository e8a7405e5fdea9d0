"""The sweep's lines in the log: what a continued sweep starts from, the best so far, the end line's counts."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from prefect_hpo import Budget, Float, SqlTrialStore, TrialState, sweep
from prefect_hpo.records import Outcome
from prefect_hpo.space import config_hash

pytestmark = pytest.mark.prefect

#: Added to every loss: the second run of the sweep sets it so that its trials are all worse.
OFFSET = {"loss": 0.0}


def offset_loss(config: dict[str, Any]) -> float:
    return float(config["x"]) + OFFSET["loss"]


def _flow_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "prefect.flow_runs"]


def test_a_continued_sweep_says_what_it_continues_and_counts_as_the_store_does(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Run 1 stores 3 trials; then an attempt is left interrupted (recorded FAIL_RECOVERABLE, as a
    stopped parent leaves it); run 2's trials are all worse. Run 2 says what it continues, names
    run 1's best as the best so far, and its end line counts as `result.budget` does."""
    space = {"x": Float(0.0, 1.0)}
    options: dict[str, Any] = dict(storage=sqlite_url, name="continued", workers="threads", seed=0)
    first = sweep(offset_loss, space, "loss", "random", Budget(max_trials=3), **options)
    best = min(first.records, key=lambda r: r.value or 1e9)
    store = SqlTrialStore(sqlite_url)
    try:
        sweep_id = store.sweep_id("continued")
        config = {"x": 0.5}
        left = store.create_trial(sweep_id, store.next_number(sweep_id), config, config_hash(config))
        store.finish_trial(left.id, Outcome(TrialState.FAIL_RECOVERABLE, error="interrupted"))
    finally:
        store.close()

    OFFSET["loss"] = 10.0
    caplog.set_level(logging.INFO, logger="prefect.flow_runs")
    try:
        second = sweep(offset_loss, space, "loss", "random", Budget(max_trials=6), **options)
    finally:
        OFFSET["loss"] = 0.0
    lines = _flow_lines(caplog)
    best_text = f"best loss={best.value:.6g} (trial {best.number})"
    assert f"sweep continued: 4 trials stored, 1 interrupted to retry; {best_text}" in lines
    trial_lines = [line for line in lines if line.startswith("trial ")]
    assert len(trial_lines) == 3  # the retried attempt and two new trials
    for line in trial_lines:  # every trial of run 2 is worse: the best stays run 1's
        assert line.endswith(f"| {best_text}"), line
    end = next(line for line in lines if line.startswith("sweep continued ended:"))
    finished, failed = map(int, re.search(r"\((\d+) trials finished, (\d+) failed\)", end).groups())  # type: ignore[union-attr]
    budget = second.budget
    assert failed == budget["failures"]["used"] == 0
    assert finished == sum(1 for r in second.records if r.state.is_finished) == budget["trials"]["used"] == 6


def test_a_trial_line_before_any_best_has_no_empty_separator(sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    def fails(config: dict[str, Any]) -> float:
        raise ValueError("no data")

    caplog.set_level(logging.INFO, logger="prefect.flow_runs")
    sweep(fails, {"x": Float(0.0, 1.0)}, "loss", "random", Budget(max_trials=2), storage=sqlite_url, workers="threads")
    trial_lines = [line for line in _flow_lines(caplog) if line.startswith("trial ")]
    assert trial_lines == ["trial 0 FAIL ValueError: no data", "trial 1 FAIL ValueError: no data"]
