"""The loop stops a run whose first trials fail alike: with a real SQLite store and a small in-test executor.

The executor runs each trial's training function in the calling thread when the loop waits, and ends
`ends_per_wait` trials per wait (the others stay RUNNING): several trials fail at once, as with four slots,
and some are still running when the sweep stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from prefect_hpo.budget import Budget, BudgetStatus
from prefect_hpo.errors import TrialsFailAlike
from prefect_hpo.executors.base import TrialHandle
from prefect_hpo.loop import LoopResult, run_loop
from prefect_hpo.objective import Objective
from prefect_hpo.records import Config, Outcome, TrialRecord, TrialState
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.training import run_training
from prefect_hpo.trial import TrialSpec
from tests.loop_fakes import loop_settings


class _Counting:
    """Proposes x = 0, 1, 2, ... (never exhausted)."""

    def __init__(self) -> None:
        self.n = 0

    def ask(self) -> Config:
        self.n += 1
        return {"x": self.n - 1}

    def tell(self, trial: TrialRecord) -> None:
        pass


class _Silent:
    def trial_started(self, trial: TrialRecord) -> None:
        pass

    def trial_ended(self, trial: TrialRecord, status: BudgetStatus) -> None:
        pass

    def sweep_ended(self, status: BudgetStatus, reason: str) -> None:
        pass


class _InlineExecutor:
    """Runs trials in the loop's thread when it waits; ends at most `ends_per_wait` per wait, oldest first."""

    def __init__(self, train: Callable[..., Any], store: SqlTrialStore, ends_per_wait: int) -> None:
        self.train, self.store, self.ends_per_wait = train, store, ends_per_wait
        self.pending: list[TrialHandle] = []
        self.cancelled: dict[int, str] = {}

    def submit(self, record: TrialRecord, spec: TrialSpec) -> TrialHandle:
        handle = TrialHandle(record=record, spec=spec, started=time.time())
        self.pending.append(handle)
        return handle

    def wait_any(self, handles: Sequence[TrialHandle], timeout: float | None) -> list[TrialHandle]:
        ended, self.pending = self.pending[: self.ends_per_wait], self.pending[self.ends_per_wait :]
        for handle in ended:
            reason = self.cancelled.get(handle.record.number)
            outcome = (
                Outcome(TrialState.PRUNED, reason=reason)
                if reason is not None
                else run_training(self.train, handle.spec, self.store)
            )
            handle.final = self.store.finish_trial(handle.record.id, outcome)
        return ended

    def cancel(self, handle: TrialHandle, reason: str) -> None:
        self.cancelled[handle.record.number] = reason

    def close(self) -> None:
        pass


def _run(
    tmp_path: Path, train: Callable[..., Any], budget: Budget, objective: str = "val_loss", ends_per_wait: int = 3
) -> tuple[LoopResult | BaseException, list[TrialRecord]]:
    store = SqlTrialStore(f"sqlite:///{tmp_path / 'hpo.db'}")
    try:
        objectives = (Objective(objective),)
        sid = store.open_sweep(
            "sw", space={}, objectives=[o.to_dict() for o in objectives], strategy="x", budget=budget.to_dict()
        )
        settings = loop_settings(budget, objectives, sid)
        executor = _InlineExecutor(train, store, ends_per_wait)
        outcome: LoopResult | BaseException
        try:
            outcome = run_loop(_Counting(), store, executor, settings, _Silent())
        except TrialsFailAlike as exc:
            outcome = exc
        return outcome, store.trials(sid)
    finally:
        store.close()


def _typo_train(config: Config) -> dict[str, float]:
    return {"val_loss": 1.0 / (1 + config["x"]), "acc": 0.5}


def test_an_objective_typo_stops_four_slots_after_three_alike_failures(tmp_path: Path) -> None:
    outcome, trials = _run(tmp_path, _typo_train, Budget(max_trials=20, max_concurrent=4), objective="val_los")
    assert isinstance(outcome, TrialsFailAlike)
    assert "3 trials (0, 1, 2) failed with the same error before any trial succeeded" in str(outcome)
    assert "did you mean 'val_loss'? change objective='val_los' to objective='val_loss'" in str(outcome)
    # 4 started at once, 3 failed together; the 4th was still running: it is stopped, nothing more starts
    assert len(trials) == 4
    assert [t.state for t in trials] == [TrialState.FAIL] * 3 + [TrialState.PRUNED]
    assert (trials[3].reason or "").startswith(
        "sweep stopped: 3 trials failed with the same error before any succeeded"
    )


def test_fail_fast_none_runs_the_whole_budget(tmp_path: Path) -> None:
    outcome, trials = _run(
        tmp_path, _typo_train, Budget(max_trials=20, max_concurrent=4, fail_fast=None), objective="val_los"
    )
    assert isinstance(outcome, LoopResult) and outcome.status == "finished"
    assert len(trials) == 20 and all(t.state == TrialState.FAIL for t in trials)


def test_k_is_settable(tmp_path: Path) -> None:
    outcome, trials = _run(
        tmp_path,
        _typo_train,
        Budget(max_trials=20, max_concurrent=1, fail_fast=5),
        objective="val_los",
        ends_per_wait=1,
    )
    assert isinstance(outcome, TrialsFailAlike) and "5 trials (0, 1, 2, 3, 4) failed" in str(outcome)
    assert len(trials) == 5


def test_a_flaky_error_after_a_success_does_not_stop_the_sweep(tmp_path: Path) -> None:
    def flaky(config: Config) -> float:
        if config["x"] % 4 != 0:
            raise RuntimeError(f"CUDA error: out of memory at batch {config['x']}")
        return float(config["x"])

    outcome, trials = _run(tmp_path, flaky, Budget(max_trials=20, max_concurrent=4))
    assert isinstance(outcome, LoopResult) and outcome.reason == "max_trials=20 reached"
    assert len(trials) == 20 and sum(t.state == TrialState.COMPLETE for t in trials) == 5


def test_failures_that_differ_do_not_stop_it(tmp_path: Path) -> None:
    def varied(config: Config) -> float:
        errors = (ValueError, KeyError, RuntimeError)
        raise errors[config["x"] % 3]("bad")

    outcome, trials = _run(tmp_path, varied, Budget(max_trials=12, max_concurrent=4))
    assert isinstance(outcome, LoopResult) and len(trials) == 12


@pytest.mark.parametrize(
    ("result", "needle"),
    [
        ("0.25", "returned '0.25' (type str), not a number or a dict of numbers; return {'val_loss': 0.25} or 0.25"),
        (None, "returned None and reported no metrics"),
    ],
)
def test_a_function_that_returns_no_number_stops_with_the_fix(tmp_path: Path, result: Any, needle: str) -> None:
    outcome, trials = _run(tmp_path, lambda config: result, Budget(max_trials=20, max_concurrent=4))
    assert isinstance(outcome, TrialsFailAlike) and needle in str(outcome)
    assert len(trials) == 4
