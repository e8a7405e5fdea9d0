"""Budgets: the limits of a sweep, what has been used, and what is left.

Usage is always computed from facts the store holds (trial counts, run times,
the sweep's start), so the answer is the same in the parent, in a CLI looking at
the store, or after a restart.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from prefect_hpo.arguments import is_integer, is_number
from prefect_hpo.errors import BudgetError


@dataclass(frozen=True)
class Budget:
    """The limits of one sweep. None means 'no limit' (except `max_concurrent`).

    Args:
        max_trials: trials to start (duplicates and rejected configurations excluded).
        max_concurrent: trials running at once.
        time_limit: wall-clock seconds for the whole sweep.
        compute_time_limit: seconds of trial run time, summed over trials.
        trial_time_limit: seconds one trial may run before it is stopped (state FAIL).
        max_failed_trials: failures allowed; one more stops the sweep with an error.
        fail_fast: when this many trials in a row fail with the same error (numbers in it aside)
            before any trial of the run has succeeded, the sweep stops with `TrialsFailAlike`
            quoting the error, instead of spending its budget on one mistake (a typo in the
            objective's metric, say). 0 or None: never (see `prefect_hpo.failures`).
        min_steps: steps every trial may run before a scheduler may stop it.
        max_steps: steps after which a trial is told to stop (it completes).
        max_total_steps: steps run by all trials together (the last step each reached, running
            trials included); when reached, the sweep stops as at its time limit.
        trials_per_run: new trials one run of the sweep may start; a sweep continued by name (a
            nightly schedule, say) adds this many each run, while `max_trials` caps the total.
    """

    max_trials: int | None = 20
    max_concurrent: int = 1
    time_limit: float | None = None
    compute_time_limit: float | None = None
    trial_time_limit: float | None = None
    max_failed_trials: int | None = None
    fail_fast: int | None = 3
    min_steps: int | None = None
    max_steps: int | None = None
    max_total_steps: int | None = None
    trials_per_run: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_trials", "max_failed_trials", "min_steps", "max_steps", "max_total_steps", "trials_per_run"):
            value = getattr(self, name)
            if value is not None and not (is_integer(value) and value >= 0):
                raise BudgetError(f"budget.{name} must be a non-negative integer or None, got {value!r}")
        if self.fail_fast is not None and not (is_integer(self.fail_fast) and self.fail_fast >= 0):
            raise BudgetError(
                f"budget.fail_fast must be a number of trials >= 1 (or 0 / None to run every trial whatever "
                f"fails), got {self.fail_fast!r}; e.g. Budget(fail_fast=3)"
            )
        if not (is_integer(self.max_concurrent) and self.max_concurrent >= 1):
            raise BudgetError(f"budget.max_concurrent must be an integer >= 1, got {self.max_concurrent!r}")
        for name in ("time_limit", "compute_time_limit", "trial_time_limit"):
            value = getattr(self, name)
            if value is not None and not (is_number(value) and value > 0 and not math.isinf(value)):
                raise BudgetError(f"budget.{name} must be a positive number of seconds or None, got {value!r}")
        if self.min_steps is not None and self.max_steps is not None and self.min_steps > self.max_steps:
            raise BudgetError(
                f"budget.min_steps ({self.min_steps}) exceeds budget.max_steps ({self.max_steps}); lower min_steps"
            )
        limits = (self.max_trials, self.time_limit, self.compute_time_limit, self.max_total_steps, self.trials_per_run)
        if all(v is None for v in limits):
            raise BudgetError(
                "budget: give at least one of max_trials, trials_per_run, time_limit, compute_time_limit or "
                "max_total_steps, or the sweep would never end on its own"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Budget:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise BudgetError(f"budget: unknown field(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**data)


@dataclass(frozen=True)
class Usage:
    """What a sweep has used so far, as counted from the store."""

    trials_started: int
    trials_finished: int
    trials_failed: int
    running: int
    elapsed: float
    compute_time: float
    total_steps: int = 0


@dataclass(frozen=True)
class BudgetStatus:
    """Limits, usage and what is left, per kind. `left_*` is None where there is no limit."""

    budget: Budget
    usage: Usage

    @property
    def left_trials(self) -> int | None:
        if self.budget.max_trials is None:
            return None
        return max(0, self.budget.max_trials - self.usage.trials_started)

    @property
    def left_time(self) -> float | None:
        if self.budget.time_limit is None:
            return None
        return max(0.0, self.budget.time_limit - self.usage.elapsed)

    @property
    def left_compute_time(self) -> float | None:
        if self.budget.compute_time_limit is None:
            return None
        return max(0.0, self.budget.compute_time_limit - self.usage.compute_time)

    @property
    def left_failures(self) -> int | None:
        if self.budget.max_failed_trials is None:
            return None
        return max(0, self.budget.max_failed_trials - self.usage.trials_failed)

    @property
    def too_many_failures(self) -> bool:
        limit = self.budget.max_failed_trials
        return limit is not None and self.usage.trials_failed > limit

    def may_start_trial(self) -> bool:
        """Whether a new trial may start now (slots aside)."""
        return self.stop_reason() is None and self.left_trials != 0

    def stop_reason(self) -> str | None:
        """Why the sweep must stop now, or None while it may go on."""
        if self.left_time == 0:
            return f"time_limit of {self.budget.time_limit:g}s reached"
        if self.left_compute_time == 0:
            return f"compute_time_limit of {self.budget.compute_time_limit:g}s reached"
        if self.budget.max_total_steps is not None and self.usage.total_steps >= self.budget.max_total_steps:
            return f"max_total_steps={self.budget.max_total_steps} reached"
        if self.too_many_failures:
            return (
                f"{self.usage.trials_failed} trials failed, more than max_failed_trials={self.budget.max_failed_trials}"
            )
        return None

    def fraction_used(self) -> float:
        """The fraction used of whichever limit is closest to running out (0..1)."""
        parts: list[float] = []
        if self.budget.max_trials:
            parts.append(self.usage.trials_finished / self.budget.max_trials)
        if self.budget.time_limit:
            parts.append(self.usage.elapsed / self.budget.time_limit)
        if self.budget.compute_time_limit:
            parts.append(self.usage.compute_time / self.budget.compute_time_limit)
        if self.budget.max_total_steps:
            parts.append(self.usage.total_steps / self.budget.max_total_steps)
        return min(1.0, max(parts, default=0.0))

    def as_dict(self) -> dict[str, Any]:
        """Limits, used and left per kind, for tables and the store."""
        return {
            "trials": {"limit": self.budget.max_trials, "used": self.usage.trials_started, "left": self.left_trials},
            "time_s": {"limit": self.budget.time_limit, "used": round(self.usage.elapsed, 3), "left": self.left_time},
            "compute_time_s": {
                "limit": self.budget.compute_time_limit,
                "used": round(self.usage.compute_time, 3),
                "left": self.left_compute_time,
            },
            "failures": {
                "limit": self.budget.max_failed_trials,
                "used": self.usage.trials_failed,
                "left": self.left_failures,
            },
            "steps": {
                "limit": self.budget.max_total_steps,
                "used": self.usage.total_steps,
                "left": None
                if self.budget.max_total_steps is None
                else max(0, self.budget.max_total_steps - self.usage.total_steps),
            },
            "running": self.usage.running,
        }
