"""The user's on_trial_complete as a reporter: called for each finished trial with the best so far."""

from __future__ import annotations

import logging
import math

import pytest

from prefect_hpo.budget import Budget, BudgetStatus, Usage
from prefect_hpo.objective import Objective
from prefect_hpo.records import Config, TrialRecord, TrialState
from prefect_hpo.reporting import TrialCallbackReporter

STATUS = BudgetStatus(Budget(max_trials=10), Usage(1, 1, 0, 0, 1.0, 1.0))


def _trial(number: int, state: TrialState, value: float | None = None) -> TrialRecord:
    values = None if value is None else (value,)
    return TrialRecord(
        id=number + 1,
        sweep_id=1,
        number=number,
        config={"x": number},
        config_hash=f"h{number}",
        state=state,
        values=values,
        last_step=3,
    )


class TestTrialCallbackReporter:
    def test_each_finished_trial_is_passed_with_the_best_so_far(self) -> None:
        seen: list[tuple[int, float | None, int | None, Config, int | None]] = []
        reporter = TrialCallbackReporter(lambda *args: seen.append(args), [Objective("loss", "max")])
        ends = [
            _trial(0, TrialState.COMPLETE, 0.5),
            _trial(1, TrialState.RUNNING),  # not finished (a resumed trial's start): not passed on
            _trial(2, TrialState.COMPLETE, math.nan),  # finished, passed, never the best
            _trial(3, TrialState.PRUNED, 0.9),  # pruned: passed, never the best
            _trial(4, TrialState.COMPLETE, 0.7),
            _trial(5, TrialState.COMPLETE, 0.6),
            _trial(6, TrialState.FAIL),
        ]
        for trial in ends:
            reporter.trial_ended(trial, STATUS)
        assert [(number, best) for number, _, _, _, best in seen] == [(0, 0), (2, 0), (3, 0), (4, 4), (5, 4), (6, 4)]
        assert seen[0] == (0, 0.5, 3, {"x": 0}, 0) and seen[-1][1] is None

    def test_a_callback_that_raises_is_logged_and_the_next_trial_is_passed_on(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        calls: list[int] = []

        def callback(number: int, value: float | None, step: int | None, config: Config, best: int | None) -> None:
            calls.append(number)
            if number == 0:
                raise RuntimeError("the user's callback failed")

        reporter = TrialCallbackReporter(callback, [Objective("loss")])
        with caplog.at_level(logging.ERROR, logger="prefect_hpo.controller"):
            reporter.trial_ended(_trial(0, TrialState.COMPLETE, 0.5), STATUS)
            reporter.trial_ended(_trial(1, TrialState.COMPLETE, 0.4), STATUS)
        assert calls == [0, 1]
        assert "on_trial_complete raised for trial 0; the sweep goes on" in caplog.text
        assert "RuntimeError: the user's callback failed" in caplog.text
