"""The SQL trial store as one object, on a SQLite file and on the local PostgreSQL: a trial's whole life
through it, and several processes writing at once."""

from __future__ import annotations

import math
import multiprocessing

import pytest

from prefect_hpo.records import Outcome, TrialState
from prefect_hpo.store import SqlTrialStore
from tests.store.helpers import open_sweep


def test_trial_lifecycle_reports_and_usage(storage_url: str) -> None:
    store = SqlTrialStore(storage_url)
    sid = open_sweep(store)
    store.start_sweep(sid, flow_run_id="abc")
    t0 = store.create_trial(sid, 0, {"x": 0.5}, "h0")
    t1 = store.create_trial(sid, 1, {"x": 0.7}, "h1")
    assert t0.state == TrialState.RUNNING and t0.started_at is not None
    assert store.add_report(t0.id, 1, {"loss": 0.9, "acc": math.nan}) is None
    assert store.add_report(t0.id, 2, {"loss": 0.4}) is None
    done = store.finish_trial(t0.id, Outcome(TrialState.COMPLETE, values=(0.4,), metrics={"loss": 0.4}, duration=1.5))
    assert done.state == TrialState.COMPLETE and done.value == 0.4 and done.last_step == 2
    store.request_stop(t1.id, "time limit")
    assert store.add_report(t1.id, 1, {"loss": 1.0}) == "time limit"
    store.finish_trial(t1.id, Outcome(TrialState.FAIL, error="boom", duration=0.5))
    reports = store.reports(sid)
    assert [(r.number, r.step) for r in reports] == [(0, 1), (0, 2), (1, 1)]
    assert math.isnan(reports[0].metrics["acc"])  # NaN survives as NaN (stored as JSON null)
    usage = store.usage(sid)
    assert (usage.trials_started, usage.trials_finished, usage.trials_failed, usage.running) == (2, 2, 1, 0)
    assert usage.compute_time == pytest.approx(2.0)
    assert store.next_number(sid) == 2
    assert store.find_config(sid, "h0", [TrialState.COMPLETE]).number == 0  # type: ignore[union-attr]
    assert store.find_config(sid, "h1", [TrialState.COMPLETE]) is None
    store.close()


def _hammer(url: str, sweep_id: int, first: int, count: int) -> None:
    store = SqlTrialStore(url)
    for n in range(first, first + count):
        t = store.create_trial(sweep_id, n, {"x": n}, f"h{n}")
        for step in range(3):
            store.add_report(t.id, step, {"loss": float(step)})
        store.finish_trial(t.id, Outcome(TrialState.COMPLETE, values=(float(n),)))
    store.close()


def test_several_processes_write_at_once(storage_url: str) -> None:
    store = SqlTrialStore(storage_url)
    sid = open_sweep(store)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(storage_url, sid, i * 100, 25)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    trials = store.trials(sid)
    assert len(trials) == 75 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len(store.reports(sid)) == 225
    store.close()
