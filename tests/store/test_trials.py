"""The store's trials: what each write returns is what the store holds, checked transitions, attempts."""

from __future__ import annotations

import math

import pytest

from prefect_hpo.errors import StoreError
from prefect_hpo.records import Outcome, TrialState
from prefect_hpo.store import SqlTrialStore
from tests.store.helpers import open_sweep


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


def test_the_first_end_of_an_attempt_wins_and_only_failures_count_as_failures(storage_url: str) -> None:
    """A worker and the parent may both record one attempt's end (`end_attempt`): the first is kept, the
    second gets the trial as stored. `failures` counts only the attempts that ended FAIL_RECOVERABLE."""
    store = SqlTrialStore(storage_url)
    sid = open_sweep(store)
    trial = store.create_trial(sid, 0, {"x": 0.1}, "h")
    assert trial.failures == 0
    died = store.end_attempt(trial.id, 1, Outcome(TrialState.FAIL_RECOVERABLE, error="worker died"))
    assert (died.state, died.failures) == (TrialState.FAIL_RECOVERABLE, 1)
    store.resume_trial(trial.id)  # attempt 2, interrupted: no failure
    cut = store.end_attempt(trial.id, 2, Outcome(TrialState.INTERRUPTED, reason="interrupted: Ctrl-C"))
    assert (cut.state, cut.attempt, cut.failures) == (TrialState.INTERRUPTED, 2, 1)
    store.resume_trial(trial.id)  # attempt 3
    assert store.end_attempt(trial.id, 2, Outcome(TrialState.FAIL, error="stale")).state == TrialState.RUNNING
    done = store.end_attempt(trial.id, 3, Outcome(TrialState.COMPLETE, values=(0.5,)), task_run_id="run-3")
    late = store.end_attempt(trial.id, 3, Outcome(TrialState.FAIL_RECOVERABLE, error="the worker process died"))
    assert late == done == store.trial(sid, 0)
    assert (late.state, late.value, late.attempt, late.failures, late.error) == (TrialState.COMPLETE, 0.5, 3, 1, None)
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

    with store.database.engine.connect() as conn:
        column = conn.execute(select(schema.trials.c.value).where(schema.trials.c.id == t.id)).scalar()
    assert column is None  # sorts after every real value on both databases
    store.close()
