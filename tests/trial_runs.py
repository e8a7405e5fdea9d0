"""Helpers for the tests of the trial handle and of the trial runtime: one trial in a SQLite store, run."""

from __future__ import annotations

from typing import Any

from prefect_hpo.objective import Objective
from prefect_hpo.store import SqlTrialStore
from prefect_hpo.training import run_training
from prefect_hpo.trial import TrialSpec


def open_store_and_trial(url: str) -> tuple[SqlTrialStore, int]:
    """A store at `url` holding one RUNNING trial; (the store, the trial's id)."""
    store = SqlTrialStore(url)
    sid = store.open_sweep("t", space={}, objectives=[], strategy="x", budget={})
    rec = store.create_trial(sid, 0, {"x": 1}, "h")
    return store, rec.id


def spec(
    trial_id: int,
    objectives: tuple[Objective, ...] = (Objective("loss"),),
    max_steps: int | None = None,
    devices: tuple[str, ...] = (),
) -> TrialSpec:
    return TrialSpec(trial_id, 0, "t", {"x": 1}, objectives, max_steps, True, devices=devices)


def run(store_and_trial: tuple[SqlTrialStore, int], fn: Any, **kw: Any) -> Any:
    store, tid = store_and_trial
    return run_training(fn, spec(tid, **kw), store)
