"""The store's heartbeats of running trials: kept per trial, cleared when the trial runs again."""

from __future__ import annotations

import time

from prefect_hpo.records import Outcome, TrialState
from prefect_hpo.store import SqlTrialStore
from tests.store.helpers import open_sweep


def test_a_trial_heartbeat_is_kept_and_cleared_when_the_trial_runs_again(storage_url: str) -> None:
    store = SqlTrialStore(storage_url)
    sweep_id = open_sweep(store)
    trial = store.create_trial(sweep_id, 0, {"x": 0.1}, "h0")
    other = store.create_trial(sweep_id, 1, {"x": 0.2}, "h1")
    assert store.heartbeat(trial.id) is None
    before = time.time()
    store.beat(trial.id)
    beat = store.heartbeat(trial.id)
    assert beat is not None and before <= beat <= time.time() and store.heartbeat(other.id) is None
    store.end_attempt(trial.id, 1, Outcome(TrialState.FAIL_RECOVERABLE, error="the worker died"))
    store.resume_trial(trial.id)
    assert store.heartbeat(trial.id) is None  # the next attempt has given no sign of life yet
    store.close()
