"""The store's count of what a sweep used: what the budget counts, and nothing it does not."""

from __future__ import annotations

import pytest

from prefect_hpo.records import Outcome, TrialState
from prefect_hpo.store import SqlTrialStore
from tests.store.helpers import open_sweep


def test_usage_counts_started_trials_their_time_and_steps_but_not_duplicates_or_rejections(
    storage_url: str,
) -> None:
    store = SqlTrialStore(storage_url)
    sweep_id = open_sweep(store)
    store.start_sweep(sweep_id, flow_run_id=None)
    running = store.create_trial(sweep_id, 0, {"x": 0.1}, "h0")
    store.add_report(running.id, 4, {"loss": 0.5})
    failed = store.create_trial(sweep_id, 1, {"x": 0.2}, "h1")
    store.finish_trial(failed.id, Outcome(TrialState.FAIL, error="boom", last_step=2, duration=2.0))
    store.create_trial(sweep_id, 2, {"x": 0.2}, "h1", TrialState.PRUNED_DUPLICATE, duplicate_of=1)
    store.create_trial(sweep_id, 3, {"x": 0.9}, "h3", TrialState.PRUNED_INVALID, reason="x too large")
    started_at = float(store.sweep(sweep_id)["started_at"])
    usage = store.usage(sweep_id, now=started_at + 10.0)
    assert (usage.trials_started, usage.trials_finished, usage.trials_failed, usage.running) == (2, 1, 1, 1)
    assert usage.compute_time == pytest.approx(2.0) and usage.elapsed == pytest.approx(10.0)
    assert usage.total_steps == store.total_steps(sweep_id) == 6
    store.close()
