"""The store's reports: read back by trial, and averaged per trial for the median rule."""

from __future__ import annotations

import math

from prefect_hpo.store import SqlTrialStore
from tests.store.helpers import open_sweep


def test_running_averages_are_the_other_trials_mean_scores_up_to_a_step(storage_url: str) -> None:
    store = SqlTrialStore(storage_url)
    sweep_id = open_sweep(store)
    a, b, c = (store.create_trial(sweep_id, n, {"x": n / 10}, f"h{n}") for n in range(3))
    for step, score in ((1, 1.0), (2, 4.0), (3, 100.0)):
        store.add_report(a.id, step, {"loss": score}, sweep_id=sweep_id, score=score)
    store.add_report(b.id, 1, {"loss": 2.0}, sweep_id=sweep_id, score=2.0)
    store.add_report(b.id, 2, {"loss": math.nan}, sweep_id=sweep_id, score=math.nan)  # no score: not averaged
    store.add_report(c.id, 1, {"acc": 0.5}, sweep_id=sweep_id)  # the objective not reported: no score
    assert sorted(store.running_averages(sweep_id, c.id, 2)) == [2.0, 2.5]
    assert store.running_averages(sweep_id, a.id, 1) == [2.0]
    reports = store.reports(sweep_id, number=1)
    assert [r.step for r in reports] == [1, 2] and math.isnan(reports[1].metrics["loss"])
    store.close()
