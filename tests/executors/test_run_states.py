"""The Prefect state each trial's run ends in: named after how the trial ended."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

from prefect_hpo import Budget, Categorical, TrialState, sweep
from prefect_hpo.executors.run_states import trial_run_state
from prefect_hpo.records import TrialRecord


def _record(state: TrialState, **fields: Any) -> TrialRecord:
    return TrialRecord(id=1, sweep_id=1, number=7, config={}, config_hash="h", state=state, **fields)


class TestTrialRunState:
    def test_a_stopped_trial_completes_under_the_name_pruned_with_its_reason(self) -> None:
        state = trial_run_state(_record(TrialState.PRUNED, reason="rung 0: not in the top 1/3"))
        assert (state.type, state.name, state.message) == (StateType.COMPLETED, "Pruned", "rung 0: not in the top 1/3")

    def test_a_failed_trial_fails_with_its_error_line(self) -> None:
        error = 'Traceback (most recent call last):\n  File "x.py"\nValueError: no data\n'
        state = trial_run_state(_record(TrialState.FAIL, error=error))
        assert (state.type, state.message) == (StateType.FAILED, "ValueError: no data")

    def test_complete_paused_and_recoverable_trials(self) -> None:
        assert trial_run_state(_record(TrialState.COMPLETE)).name == "Completed"
        paused = trial_run_state(_record(TrialState.PAUSED, reason="paused at rung 1"))
        assert (paused.type, paused.name) == (StateType.COMPLETED, "Paused")
        assert trial_run_state(_record(TrialState.FAIL_RECOVERABLE, error="died")).type == StateType.CRASHED


def fails_below_half(config: dict[str, Any]) -> float:
    if config["x"] < 0.5:
        raise ValueError("x too small")
    return float(config["x"])


@pytest.mark.prefect
def test_task_runs_of_failed_trials_end_failed_and_the_sweep_still_completes(sqlite_url: str) -> None:
    result = sweep(
        fails_below_half,
        {"x": Categorical([0.1, 0.9])},
        "loss",
        "grid",
        Budget(max_trials=2),
        storage=sqlite_url,
        workers="threads",
    )
    with get_client(sync_client=True) as client:
        states = {r.state: client.read_task_run(UUID(r.task_run_id)).state for r in result.records if r.task_run_id}
    assert set(states) == {TrialState.FAIL, TrialState.COMPLETE}
    assert states[TrialState.FAIL].type == StateType.FAILED  # type: ignore[union-attr]
    assert states[TrialState.FAIL].message == "ValueError: x too small"  # type: ignore[union-attr]
    assert states[TrialState.COMPLETE].name == "Completed"  # type: ignore[union-attr]
    assert result.best_value == 0.9
