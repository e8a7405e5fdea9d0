"""The loop's budget accounting between events: usage counted in memory (seeded from the store), whether
another trial may start, why none may, and how long the loop may sleep before a limit needs a look."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prefect_hpo.budget import Budget, BudgetStatus, Usage
from prefect_hpo.executors.base import TrialHandle
from prefect_hpo.records import TrialRecord


class UsageCounter:
    """The budget's usage, kept in memory between events and seeded from the store."""

    def __init__(self, usage: Usage, started_at: float, clock: Callable[[], float]) -> None:
        self.steps = usage.total_steps
        self.started = usage.trials_started
        self.finished = usage.trials_finished
        self.failed = usage.trials_failed
        self.compute = usage.compute_time
        self.started_at = started_at
        self.clock = clock

    def status(self, budget: Budget, running: Mapping[int, TrialHandle]) -> BudgetStatus:
        now = self.clock()
        in_flight = sum(now - h.started for h in running.values())
        usage = Usage(
            trials_started=self.started,
            trials_finished=self.finished,
            trials_failed=self.failed,
            running=len(running),
            elapsed=now - self.started_at,
            compute_time=self.compute + in_flight,
            total_steps=self.steps,
        )
        return BudgetStatus(budget, usage)

    def ended(self, trial: TrialRecord, earlier_duration: float) -> None:
        """Count one attempt's end; a paused trial is not finished, and its time so far counts once."""
        self.finished += int(trial.state.is_finished)
        self.failed += int(trial.state.is_failure)
        self.compute += (trial.duration or 0.0) - earlier_duration


def may_start(budget: Budget, counter: UsageCounter, started_in_this_run: int, waiting: int = 0) -> bool:
    """Whether the trial budgets (max_trials, trials_per_run) let one more trial start, beyond the `waiting`
    ones already asked for (they wait for resources)."""
    if budget.trials_per_run is not None and started_in_this_run + waiting >= budget.trials_per_run:
        return False
    return budget.max_trials is None or counter.started + waiting < budget.max_trials


def spent_reason(budget: Budget, counter: UsageCounter, started_in_this_run: int) -> str:
    """Why no trial may start any more, for the sweep's end line."""
    if budget.max_trials is not None and counter.started >= budget.max_trials:
        return f"max_trials={budget.max_trials} reached"
    if budget.trials_per_run is not None and started_in_this_run >= budget.trials_per_run:
        return f"trials_per_run={budget.trials_per_run} started in this run"
    return "budget spent"


#: How often the loop looks at the steps trials have reported, under a step budget.
STEP_BUDGET_POLL_S = 0.2
#: How often the loop asks its stop check (a controller) while no trial ends.
STOP_CHECK_POLL_S = 0.25


def wake_in(status: BudgetStatus) -> float | None:
    """How long the loop may sleep before a budget needs checking (None: until an event)."""
    if status.budget.max_total_steps is not None:
        return STEP_BUDGET_POLL_S
    waits = [w for w in (status.left_time, status.left_compute_time) if w is not None]
    if not waits:
        return None
    # compute time runs faster than wall time when several trials run at once
    return max(0.05, min(waits) / max(1, status.usage.running))


__all__ = ["STEP_BUDGET_POLL_S", "STOP_CHECK_POLL_S", "UsageCounter", "may_start", "spent_reason", "wake_in"]
