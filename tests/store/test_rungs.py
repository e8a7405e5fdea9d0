"""The store's rungs: each trial's first score at a rung, in the order trials reached it."""

from __future__ import annotations

import math

from prefect_hpo.records import Outcome, TrialState
from prefect_hpo.store import SqlTrialStore
from tests.store.helpers import open_sweep


def _shown(scores: list[float]) -> list[float | None]:
    """Scores with NaN as None, so that lists compare equal."""
    return [None if math.isnan(score) else score for score in scores]


def test_a_rung_keeps_each_trials_first_score_in_the_order_trials_reached_it(storage_url: str) -> None:
    store = SqlTrialStore(storage_url)
    sweep_id = open_sweep(store)
    a, b, c = (store.create_trial(sweep_id, n, {"x": n / 10}, f"h{n}") for n in range(3))
    assert store.record_rung(sweep_id, a.id, 0, 1, 0.5) == [0.5]
    assert _shown(store.record_rung(sweep_id, b.id, 0, 1, math.nan)) == [0.5, None]
    assert store.record_rung(sweep_id, a.id, 0, 1, 0.1) == [0.5]  # recorded once: the scores up to its own
    assert _shown(store.record_rung(sweep_id, c.id, 0, 1, 0.3)) == [0.5, None, 0.3]
    assert store.record_rung(sweep_id, a.id, 0, 3, 0.2) == [0.2]
    assert _shown(store.rung_scores(sweep_id, 0, 1)) == [0.5, None, 0.3] and store.rung_scores(sweep_id, 1, 1) == []
    rungs = store.rungs(sweep_id)
    assert [(number, bracket, level) for _, number, bracket, level, _ in rungs] == [
        (0, 0, 1),
        (1, 0, 1),
        (2, 0, 1),
        (0, 0, 3),
    ]
    assert [number for _, number, _, _, _ in store.rungs(sweep_id, after_id=rungs[1][0])] == [2, 0]
    store.finish_trial(a.id, Outcome(TrialState.PAUSED, values=(0.2,), reason="paused at rung 3"))
    store.finish_trial(b.id, Outcome(TrialState.PAUSED, values=(math.nan,), reason="paused at rung 1"))
    paused = store.paused_at_rungs(sweep_id)
    assert [(number, bracket, level) for number, bracket, level, _ in paused] == [(0, 0, 3), (1, 0, 1)]
    assert _shown([score for _, _, _, score in paused]) == [0.2, None]  # each at its highest rung
    store.close()
