"""Budgets: validation, what is left, when the sweep must stop."""

from __future__ import annotations

import pytest

from prefect_hpo.budget import Budget, BudgetStatus, Usage
from prefect_hpo.errors import BudgetError


def usage(**kw: float) -> Usage:
    base = {
        "trials_started": 0,
        "trials_finished": 0,
        "trials_failed": 0,
        "running": 0,
        "elapsed": 0.0,
        "compute_time": 0.0,
    }
    base.update(kw)
    return Usage(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"max_trials": -1}, "budget.max_trials"),
        ({"max_concurrent": 0}, "budget.max_concurrent"),
        ({"time_limit": 0}, "budget.time_limit"),
        ({"trial_time_limit": float("inf")}, "budget.trial_time_limit"),
        ({"min_steps": 5, "max_steps": 3}, "min_steps (5) exceeds"),
        ({"max_trials": None}, "never end"),
        ({"max_total_steps": -5}, "budget.max_total_steps"),
    ],
)
def test_invalid_budgets_name_the_field(kwargs: dict, needle: str) -> None:
    with pytest.raises(BudgetError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        Budget(**kwargs)


def test_left_and_stop_reasons() -> None:
    budget = Budget(max_trials=10, time_limit=60, compute_time_limit=100, max_failed_trials=2)
    status = BudgetStatus(
        budget, usage(trials_started=4, trials_finished=3, trials_failed=2, elapsed=30, compute_time=50)
    )
    assert status.left_trials == 6 and status.left_time == 30 and status.left_compute_time == 50
    assert status.left_failures == 0 and status.stop_reason() is None
    assert status.fraction_used() == pytest.approx(0.5)
    failed = BudgetStatus(budget, usage(trials_failed=3))
    assert failed.too_many_failures and "max_failed_trials=2" in (failed.stop_reason() or "")
    assert "time_limit" in (BudgetStatus(budget, usage(elapsed=61)).stop_reason() or "")
    assert "compute_time_limit" in (BudgetStatus(budget, usage(compute_time=100)).stop_reason() or "")
    assert BudgetStatus(budget, usage()).as_dict()["trials"] == {"limit": 10, "used": 0, "left": 10}


def test_round_trip_and_unknown_fields() -> None:
    budget = Budget(max_trials=5, max_concurrent=2, trial_time_limit=3.5)
    assert Budget.from_dict(budget.to_dict()) == budget
    with pytest.raises(BudgetError, match=r"unknown field.*max_jobs"):
        Budget.from_dict({"max_jobs": 3})
