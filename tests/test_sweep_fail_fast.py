"""End to end: `sweep()` stops early when its first trials fail alike, and its Prefect flow run ends Failed."""

from __future__ import annotations

import time
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

from prefect_hpo import Budget, Float, SqlTrialStore, TrialState, sweep
from prefect_hpo.errors import TooManyFailedTrials, TrialsFailAlike
from prefect_hpo.records import Config
from prefect_hpo.trial import Trial

pytestmark = pytest.mark.prefect

SPACE = {"lr": Float(1e-4, 1e-1, log=True)}


def typo_train(config: Config, trial: Trial) -> dict[str, float]:
    """Trials 0-2 end at once; later ones would run a minute: they are running when the sweep stops."""
    if trial.number >= 3:
        time.sleep(60)
    return {"val_loss": config["lr"], "acc": 0.5}


def test_an_objective_typo_stops_a_four_slot_process_sweep_and_its_flow_run_fails(sqlite_url: str) -> None:
    with pytest.raises(TrialsFailAlike) as caught:
        sweep(
            typo_train,
            SPACE,
            "val_los",
            "random",
            Budget(max_trials=20, max_concurrent=4),
            storage=sqlite_url,
            name="typo",
            seed=0,
            workers="processes",
            artifact_interval=None,
        )
    message = str(caught.value)
    assert "3 trials (0, 1, 2) failed with the same error before any trial succeeded" in message
    assert "did you mean 'val_loss'? change objective='val_los' to objective='val_loss'" in message
    store = SqlTrialStore(sqlite_url)
    try:
        sid = store.sweep_id("typo")
        trials = store.trials(sid)
        row = store.sweep(sid)
    finally:
        store.close()
    # 4 start; each batch of ends that does not trip the check frees its slots (at most 2 failures), so at
    # most 6 trials ever start, however the ends arrive
    assert 3 <= len(trials) <= 6
    assert [t.state for t in trials[:3]] == [TrialState.FAIL] * 3
    stopped = trials[3:]
    assert stopped and all(t.state == TrialState.PRUNED for t in stopped)  # killed, not waited for a minute
    assert all((t.reason or "").startswith("sweep stopped: 3 trials failed with the same error") for t in stopped)
    assert (
        row["status"] == "failed"
        and "TrialsFailAlike" in str(row["stop_reason"])
        and "val_los" in str(row["stop_reason"])
    )
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(str(row["flow_run_id"])))
    assert flow_run.state is not None and flow_run.state.type == StateType.FAILED


def test_a_function_that_returns_a_string_stops_after_three_trials(sqlite_url: str) -> None:
    with pytest.raises(TrialsFailAlike, match=r"returned '0\.0\d+' \(type str\), not a number .*float\(text\)"):
        sweep(
            lambda config: str(config["lr"]),
            SPACE,
            "loss",
            "random",
            Budget(max_trials=20),
            storage=sqlite_url,
            name="returns-str",
            seed=0,
            workers="threads",
            artifact_interval=None,
        )
    store = SqlTrialStore(sqlite_url)
    try:
        assert len(store.trials(store.sweep_id("returns-str"))) == 3
    finally:
        store.close()


def test_a_good_sweep_with_failures_alike_after_a_success_runs_its_whole_budget(sqlite_url: str) -> None:
    def flaky(config: Config, trial: Trial) -> float:
        if trial.number in (1, 2, 3, 7):
            raise RuntimeError(f"lost the data loader at batch {trial.number * 17}")
        return config["lr"]

    result = sweep(
        flaky,
        SPACE,
        "loss",
        "random",
        Budget(max_trials=10),
        storage=sqlite_url,
        seed=0,
        workers="threads",
        artifact_interval=None,
    )
    assert result.stop_reason == "max_trials=10 reached" and result.best_value is not None
    assert [r.state for r in result.records].count(TrialState.FAIL) == 4


def test_max_failed_trials_is_still_its_own_limit_with_fail_fast_off(sqlite_url: str) -> None:
    with pytest.raises(TooManyFailedTrials, match="more than max_failed_trials=1") as caught:
        sweep(
            lambda config: 1 / 0,
            SPACE,
            "loss",
            "random",
            Budget(max_trials=20, max_failed_trials=1, fail_fast=None),
            storage=sqlite_url,
            workers="threads",
            artifact_interval=None,
        )
    assert not isinstance(caught.value, TrialsFailAlike)
