"""The SQL trial store on a SQLite file and on the local PostgreSQL."""

from __future__ import annotations

import math
import multiprocessing
from typing import Any

import pytest

from prefect_hpo.errors import StoreError, SweepConflictError
from prefect_hpo.records import Outcome, TrialState
from prefect_hpo.store import SqlTrialStore, mask_url
from prefect_hpo.store.urls import resolve_storage

SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0, "log": False}}
OBJ = [{"metric": "loss", "mode": "min"}]
BUDGET = {"max_trials": 3}


def open_sweep(store: SqlTrialStore, name: str = "s", space: dict[str, Any] = SPACE) -> int:
    return store.open_sweep(name, space=space, objectives=OBJ, strategy="tpe", budget=BUDGET)


def test_sweep_reopens_and_refuses_a_different_space(storage_url: str) -> None:
    store = SqlTrialStore(storage_url)
    sid = open_sweep(store)
    assert open_sweep(store) == sid
    other = {"x": {"type": "float", "low": 0.0, "high": 2.0, "log": False}}
    with pytest.raises(SweepConflictError, match="different search space"):
        open_sweep(store, space=other)
    assert store.sweep_names() == ["s"]
    store.close()


def test_a_fork_runs_under_its_own_name_and_is_found_again(storage_url: str) -> None:
    store = SqlTrialStore(storage_url)
    original = open_sweep(store, "s_1")
    other = {"x": {"type": "float", "low": 0.0, "high": 2.0, "log": False}}
    third = {"x": {"type": "float", "low": 0.0, "high": 3.0, "log": False}}
    assert store.fork_name("s_1", other, OBJ) == "s_1-fork-1"
    first = store.open_sweep("s_1", space=other, objectives=OBJ, strategy="tpe", budget=BUDGET, fork=True)
    again = store.open_sweep("s_1", space=other, objectives=OBJ, strategy="tpe", budget=BUDGET, fork=True)
    assert first == again != original  # the same fork, continued
    second = store.open_sweep("s_1", space=third, objectives=OBJ, strategy="tpe", budget=BUDGET, fork=True)
    assert store.sweep_names() == ["s_1", "s_1-fork-1", "s_1-fork-2"]
    assert store.sweep(second)["name"] == "s_1-fork-2" and store.sweep(original)["space"] == SPACE
    assert open_sweep(store, "s_1", SPACE) == original  # the original is untouched and still opens
    store.close()


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


def test_the_records_writes_return_are_what_the_store_holds(storage_url: str) -> None:
    """Each write returns the trial as it now stands in the store, every field of it (the statements are
    built once and take their columns from the parameters, so a column left out would show here)."""
    store = SqlTrialStore(storage_url)
    sid = open_sweep(store)
    first = store.create_trial(sid, 0, {"x": 0.25}, "h0", bracket=2, lineage={"member": 1, "start_step": 0})
    assert first == store.trial(sid, 0)
    assert store.add_report(first.id, 3, {"loss": 0.5}, sweep_id=sid, score=0.5) is None
    assert store.add_report(first.id, 4, {"loss": 0.45}) is None  # the sweep looked up from the trial
    outcome = Outcome(
        TrialState.FAIL_RECOVERABLE,
        values=(0.45,),
        metrics={"loss": 0.45, "acc": 0.9},
        error="worker died",
        reason="lost",
        duration=2.5,
        worker="host:1",
    )
    ended = store.finish_trial(first.id, outcome, task_run_id="run-1")
    assert ended == store.trial(sid, 0)
    assert (ended.state, ended.values, ended.last_step, ended.task_run_id) == (
        TrialState.FAIL_RECOVERABLE,
        (0.45,),
        4,
        "run-1",
    )
    again = store.resume_trial(first.id)
    assert again == store.trial(sid, 0) and (again.attempt, again.state) == (2, TrialState.RUNNING)
    final = store.finish_trial(again.id, Outcome(TrialState.COMPLETE, values=(0.4,), duration=1.0))
    assert final == store.trial(sid, 0) and final.duration == pytest.approx(3.5)  # the attempts add up
    duplicate = store.create_trial(
        sid, 1, {"x": 0.25}, "h0", TrialState.PRUNED_DUPLICATE, values=(0.4,), reason="same as 0", duplicate_of=0
    )
    assert duplicate == store.trial(sid, 1) and duplicate.finished_at is not None
    store.close()


def test_illegal_transitions_are_refused_and_change_nothing(storage_url: str) -> None:
    store = SqlTrialStore(storage_url)
    sid = open_sweep(store)
    t = store.create_trial(sid, 0, {"x": 0.1}, "h")
    store.finish_trial(t.id, Outcome(TrialState.COMPLETE, values=(1.0,)))
    with pytest.raises(StoreError, match="cannot move from COMPLETE to FAIL"):
        store.finish_trial(t.id, Outcome(TrialState.FAIL, error="late"))
    again = store.trial(sid, 0)
    assert again.state == TrialState.COMPLETE and again.error is None and again.value == 1.0
    with pytest.raises(StoreError, match="already exists"):
        store.create_trial(sid, 0, {"x": 0.2}, "h2")
    store.close()


def test_nan_objective_is_kept_out_of_the_value_column(storage_url: str) -> None:
    store = SqlTrialStore(storage_url)
    sid = open_sweep(store)
    t = store.create_trial(sid, 0, {"x": 0.1}, "h")
    rec = store.finish_trial(t.id, Outcome(TrialState.FAIL, values=(math.nan,), error="NaN objective"))
    assert rec.state == TrialState.FAIL
    stored = store.trial(sid, 0)
    assert stored.values is not None and math.isnan(stored.values[0])
    from sqlalchemy import select

    from prefect_hpo.store import schema

    with store._engine.connect() as conn:
        column = conn.execute(select(schema.trials.c.value).where(schema.trials.c.id == t.id)).scalar()
    assert column is None  # sorts after every real value on both databases
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


def test_unreachable_database_fails_fast_without_the_password() -> None:
    url = "postgresql+psycopg://hpo:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(StoreError) as info:
        SqlTrialStore(url)
    assert "cannot reach storage" in str(info.value)
    assert "s3cret" not in str(info.value) and "***" in str(info.value)


def test_bad_urls_and_masking(tmp_path: Any) -> None:
    with pytest.raises(StoreError, match=r"cannot open storage 'nonsense://'.*sqlite:///hpo.db"):
        SqlTrialStore("nonsense://")
    with pytest.raises(StoreError, match="not a database URL"):
        SqlTrialStore("::not a url::")
    with pytest.raises(StoreError, match="in-memory SQLite"):
        SqlTrialStore("sqlite://")
    assert mask_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert resolve_storage(str(tmp_path / "a" / "b.db")).startswith("sqlite:///")
    assert (tmp_path / "a").is_dir()


def test_sqlite_uses_wal(sqlite_url: str) -> None:
    from sqlalchemy import text

    store = SqlTrialStore(sqlite_url)
    with store._engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    store.close()


def _open_and_close(url: str) -> None:
    SqlTrialStore(url).close()


def test_processes_opening_a_new_store_at_once_all_succeed(storage_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_open_and_close, args=(storage_url,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert SqlTrialStore(storage_url).sweep_names() == []
