"""The search loop: keep every slot busy, hear each end at once, tell the strategy, check the budget.

Pure wiring of the narrow interfaces (strategy, store, executor, reporter); it
knows nothing of Prefect. Each new trial is committed to the store before it is
submitted, and each end is committed (by the executor) before the loop hears of
it, so the loop's own counters are a cache of what the store already says.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import fsspec

from prefect_hpo.budget import Budget, BudgetStatus, Usage
from prefect_hpo.errors import StoreError, TooManyFailedTrials
from prefect_hpo.executors.base import Executor, TrialHandle
from prefect_hpo.objective import Objective
from prefect_hpo.records import Config, Constraint, Outcome, TrialRecord, TrialState
from prefect_hpo.schedulers.base import Scheduler
from prefect_hpo.space import config_hash
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.strategies.base import WAIT, MultiFidelityStrategy, ResumableStrategy, Strategy
from prefect_hpo.trial import TrialSpec, checkpoint_path

#: States whose configuration counts as already evaluated (or being evaluated).
_EVALUATED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.PAUSED)


class Reporter(Protocol):
    """Hears of the sweep's progress (terminal bar, logs, later artifacts)."""

    def trial_started(self, trial: TrialRecord) -> None: ...

    def trial_ended(self, trial: TrialRecord, status: BudgetStatus) -> None: ...

    def sweep_ended(self, status: BudgetStatus, reason: str) -> None: ...


@dataclass(frozen=True)
class LoopSettings:
    sweep_id: int
    sweep_name: str
    objectives: tuple[Objective, ...]
    budget: Budget
    pass_trial: bool
    scheduler: Scheduler | None = None
    checkpoint_root: str | None = None
    max_consecutive_duplicates: int = 20
    max_retries: int = 2
    #: Asked between events: a reason to stop the sweep now (a controller's stop() or time limit), or None.
    stop_check: Callable[[], str | None] | None = None
    #: Asked before a new configuration runs: False or a reason rejects it (PRUNED_INVALID).
    constraint: Constraint | None = None
    max_rejections_in_a_row: int = 20


@dataclass(frozen=True)
class LoopResult:
    status: str  # "finished" | "failed"
    reason: str


class _Counter:
    """The budget's usage, kept in memory between events and seeded from the store."""

    def __init__(self, usage: Usage, started_at: float) -> None:
        self.steps = usage.total_steps
        self.started = usage.trials_started
        self.finished = usage.trials_finished
        self.failed = usage.trials_failed
        self.compute = usage.compute_time
        self.started_at = started_at

    def status(self, budget: Budget, running: dict[int, TrialHandle]) -> BudgetStatus:
        now = time.time()
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


def run_loop(
    strategy: Strategy,
    store: SqlTrialStore,
    executor: Executor,
    settings: LoopSettings,
    reporter: Reporter,
    clock: Callable[[], float] = time.time,
) -> LoopResult:
    """Run the sweep until its budget or its space is spent; returns how it ended."""
    return _SweepLoop(strategy, store, executor, settings, reporter, clock).run()


class _SweepLoop:
    """One run of the loop: the trials in flight and the counters, between events."""

    def __init__(
        self,
        strategy: Strategy,
        store: SqlTrialStore,
        executor: Executor,
        settings: LoopSettings,
        reporter: Reporter,
        clock: Callable[[], float],
    ) -> None:
        self.strategy, self.store, self.executor = strategy, store, executor
        self.settings, self.reporter = settings, reporter
        self.sid, self.budget = settings.sweep_id, settings.budget
        stored = store.trials(self.sid)
        # Configurations this sweep has stored: only these need a look in the store for a duplicate (this
        # loop holds the sweep's lease, so no one else adds any); a query per proposal cost ~4% of the
        # parent's time over 1,000 trivial trials.
        self.stored_keys = {past.config_hash for past in stored}
        if isinstance(strategy, ResumableStrategy):
            strategy.restore(stored)
        else:
            for past in stored:
                if past.state.is_finished:
                    strategy.tell(past)
        self.counter = _Counter(store.usage(self.sid), started_at=clock())
        self.running: dict[int, TrialHandle] = {}
        self.number = store.next_number(self.sid)
        self.started_in_this_run = 0
        self.exhausted: str | None = None
        self.duplicates_in_a_row = 0
        self.rejections_in_a_row = 0
        self.rungs_seen = 0
        self.learns_rungs = isinstance(strategy, MultiFidelityStrategy)
        scheduler = settings.scheduler
        self.promoter = scheduler if getattr(scheduler, "promotes", False) else None

    def run(self) -> LoopResult:
        self._reconcile_orphans()
        while True:
            if self.budget.max_total_steps is not None:
                self.counter.steps = self.store.total_steps(self.sid)  # trials report steps to the store
            status = self.counter.status(self.budget, self.running)
            stop = status.stop_reason()
            if stop is None and self.settings.stop_check is not None:
                stop = self.settings.stop_check()
            if stop is not None:
                return self._stop(stop)
            self._tell_rungs()
            while len(self.running) < self.budget.max_concurrent and self._promote():
                pass
            self._start_new_trials()
            if not self.running:
                reason = self.exhausted or _spent_reason(self.budget, self.counter, self.started_in_this_run)
                self._leave_paused(f"paused at a rung and not promoted before the sweep ended ({reason})")
                self.reporter.sweep_ended(self.counter.status(self.budget, self.running), reason)
                return LoopResult("finished", reason)
            wake = _wake_in(status)
            if self.settings.stop_check is not None:
                wake = STOP_CHECK_POLL_S if wake is None else min(wake, STOP_CHECK_POLL_S)
            for handle in self.executor.wait_any(list(self.running.values()), timeout=wake):
                self._settle(handle)

    def _reconcile_orphans(self) -> None:
        """Trials left RUNNING by a parent that died (this loop holds the sweep now, so no one else runs them).

        An executor whose trials outlive their parent (flow runs on a work pool) adopts them: it watches
        the same attempt again, and its launch is idempotent. Elsewhere the trial died with its parent:
        it is recorded FAIL_RECOVERABLE and runs again as a new attempt, up to max_retries. Trials left
        FAIL_RECOVERABLE (recorded, then the run ended before it retried them) run again the same way.
        """
        for orphan in self.store.trials(self.sid, [TrialState.RUNNING]):
            if getattr(self.executor, "adopts_running", False):
                self.running[orphan.number] = self.executor.submit(orphan, self._spec(orphan))
                self.reporter.trial_started(orphan)
                continue
            lost = Outcome(
                TrialState.FAIL_RECOVERABLE,
                error="the sweep's parent process died while this trial ran; it runs again as a new attempt",
            )
            self._retry_or_give_up(self.store.finish_trial(orphan.id, lost))
        # recoverable failures the previous run recorded but did not retry before it ended (its store failed)
        for failed in self.store.trials(self.sid, [TrialState.FAIL_RECOVERABLE]):
            self._retry_or_give_up(failed)

    def _retry_or_give_up(self, failed: TrialRecord) -> None:
        if not self._retry(failed):
            final = self.store.give_up(failed.id, f"gave up after {failed.attempt} attempts: {failed.error}")
            self.counter.ended(final, 0.0)
            self.strategy.tell(final)
            self.reporter.trial_ended(final, self.counter.status(self.budget, self.running))

    def _stop(self, reason: str) -> LoopResult:
        """Stop every running trial, leave the paused ones, and end (with an error after too many failures)."""
        for handle in self.running.values():
            self.executor.cancel(handle, f"sweep stopped: {reason}")
        while self.running:
            for handle in self.executor.wait_any(list(self.running.values()), timeout=None):
                self._settle(handle)
        self._leave_paused(f"paused when the sweep stopped: {reason}")
        status = self.counter.status(self.budget, self.running)
        self.reporter.sweep_ended(status, reason)
        if status.too_many_failures:
            raise TooManyFailedTrials(
                f"sweep {self.settings.sweep_name!r} stopped: {reason}; look at the failed trials' errors "
                "(result.trials / the store), fix the training function, or raise budget.max_failed_trials"
            )
        return LoopResult("finished", reason)

    def _start_new_trials(self) -> None:
        """Fill free slots with new configurations while the budget and the space allow."""
        while (
            self.exhausted is None
            and len(self.running) < self.budget.max_concurrent
            and _may_start(self.budget, self.counter, self.started_in_this_run)
        ):
            config = self.strategy.ask()
            if config is WAIT:
                return  # nothing to propose until a running trial ends
            if config is None:
                self.exhausted = getattr(self.strategy, "exhausted_reason", "search space exhausted")
                return
            assert isinstance(config, dict)
            if self._rejected(config):
                if self.exhausted is not None:
                    return
                continue
            key = config_hash(config)
            if getattr(self.strategy, "repeats_configs", False):  # PBT: members go on with their configuration
                self._start(config, key, getattr(self.strategy, "last_lineage", None))
                continue
            in_flight = any(h.record.config_hash == key for h in self.running.values())
            seen = None
            if not in_flight and key in self.stored_keys:
                seen = self.store.find_config(self.sid, key, _EVALUATED)
            if in_flight or (seen is not None and not seen.state.is_finished):
                # the same configuration is in flight (e.g. a trial re-run after its parent died), as far as
                # this loop has heard: nothing to reuse yet and nothing worth a record; ask again, within the
                # duplicate allowance
                self._count_duplicate()
                continue
            if seen is not None:
                self._record_duplicate(config, key, seen)
                continue
            self.duplicates_in_a_row = 0
            self._start(config, key, None)

    def _create_trial(self, *args: Any, **kwargs: Any) -> TrialRecord:
        """`store.create_trial`, remembering the configuration as stored."""
        record = self.store.create_trial(*args, **kwargs)
        self.stored_keys.add(record.config_hash)
        return record

    def _start(self, config: Config, key: str, lineage: dict[str, Any] | None) -> None:
        """Record a new trial RUNNING and submit it (from its parent's checkpoint, when it has a lineage)."""
        scheduler = self.settings.scheduler
        bracket = scheduler.bracket_for(self.number) if scheduler else 0
        record = self._create_trial(
            self.sid, self.number, config, key, TrialState.RUNNING, bracket=bracket, lineage=lineage
        )
        self.number += 1
        if lineage is not None and lineage.get("parent") is not None:
            self._inherit_checkpoint(int(lineage["parent"]), record.number)
        self.running[record.number] = self.executor.submit(record, self._spec(record))
        self.counter.started += 1
        self.started_in_this_run += 1
        self.reporter.trial_started(record)

    def _inherit_checkpoint(self, parent: int, child: int) -> None:
        """Copy the parent trial's checkpoint folder to the child's (PBT: exploit, or a member going on)."""
        root = self.settings.checkpoint_root
        if not root:
            return
        source = checkpoint_path(root, self.settings.sweep_name, parent)
        target = checkpoint_path(root, self.settings.sweep_name, child)
        fs, source_path = fsspec.core.url_to_fs(source)
        if fs.exists(source_path):
            _, target_path = fsspec.core.url_to_fs(target)
            fs.copy(source_path.rstrip("/") + "/", target_path, recursive=True)

    def _rejected(self, config: Config) -> bool:
        """Ask the user's constraint; a rejected configuration is stored PRUNED_INVALID and told as failed."""
        if self.settings.constraint is None:
            return False
        verdict = self.settings.constraint(config)
        if verdict is True or verdict is None:
            self.rejections_in_a_row = 0
            return False
        reason = verdict if isinstance(verdict, str) and verdict else "rejected by the constraint"
        invalid = self._create_trial(
            self.sid, self.number, config, config_hash(config), TrialState.PRUNED_INVALID, reason=reason
        )
        self.number += 1
        self.strategy.tell(invalid)
        self.rejections_in_a_row += 1
        if self.rejections_in_a_row >= self.settings.max_rejections_in_a_row:
            self.exhausted = (
                f"the constraint rejected {self.rejections_in_a_row} configurations in a row; loosen the "
                "constraint or narrow the search space to where it holds"
            )
        return True

    def _record_duplicate(self, config: Config, key: str, seen: TrialRecord) -> None:
        """A repeated configuration is not run: its earlier result is reused and told again."""
        duplicate = self._create_trial(
            self.sid,
            self.number,
            config,
            key,
            TrialState.PRUNED_DUPLICATE,
            values=seen.values if seen.state.is_finished else None,
            metrics=seen.metrics,
            reason=f"same configuration as trial {seen.number}",
            duplicate_of=seen.number,
        )
        self.number += 1
        self.strategy.tell(duplicate)
        self._count_duplicate()

    def _count_duplicate(self) -> None:
        self.duplicates_in_a_row += 1
        if self.duplicates_in_a_row >= self.settings.max_consecutive_duplicates:
            self.exhausted = (
                f"search space exhausted: {self.duplicates_in_a_row} proposals in a row repeated "
                "configurations already evaluated"
            )

    def _promote(self) -> bool:
        """Resume the best promotable paused trial, if any (promotion-form schedulers)."""
        if self.promoter is None:
            return False
        choice = self.promoter.next_promotion(self.store, self.sid)  # type: ignore[attr-defined]
        if choice is None:
            return False
        record = self.store.resume_trial(self.store.trial(self.sid, choice[0]).id)
        self.running[record.number] = self.executor.submit(record, self._spec(record))
        self.reporter.trial_started(record)
        return True

    def _settle(self, handle: TrialHandle) -> None:
        """Take in one ended attempt: count it, tell the strategy, report it."""
        self.running.pop(handle.record.number, None)
        if handle.error is not None:
            raise handle.error
        final = handle.final
        if final is None:
            raise StoreError(f"trial {handle.record.number} ended without a recorded state")
        if final.state == TrialState.FAIL_RECOVERABLE:
            if self._retry(final):
                return
            final = self.store.give_up(final.id, f"gave up after {final.attempt} attempts: {final.error}")
        self.counter.ended(final, handle.record.duration or 0.0)
        if final.state.is_finished:
            self.strategy.tell(final)
        self.reporter.trial_ended(final, self.counter.status(self.budget, self.running))

    def _retry(self, trial: TrialRecord) -> bool:
        """Run a recoverable failure (its worker died) again as a new attempt, up to max_retries times."""
        if trial.attempt > self.settings.max_retries:
            return False
        record = self.store.resume_trial(trial.id)
        self.running[record.number] = self.executor.submit(record, self._spec(record))
        self.reporter.trial_started(record)
        return True

    def _tell_rungs(self) -> None:
        """Pass rung scores stored since the last look to a strategy that learns from them (BOHB)."""
        if not self.learns_rungs:
            return
        for rung_id, trial_number, _bracket, level, score in self.store.rungs(self.sid, after_id=self.rungs_seen):
            handle = self.running.get(trial_number)
            config = handle.record.config if handle else self.store.trial(self.sid, trial_number).config
            self.strategy.tell_rung(config, level, score)  # type: ignore[attr-defined]
            self.rungs_seen = rung_id

    def _leave_paused(self, reason: str) -> None:
        for left in self.store.leave_paused(self.sid, reason):
            self.strategy.tell(left)
            self.reporter.trial_ended(left, self.counter.status(self.budget, self.running))

    def _spec(self, record: TrialRecord) -> TrialSpec:
        """What the trial needs to run, wherever it runs."""
        settings, budget = self.settings, self.budget
        resume_step = record.last_step if record.attempt > 1 else None
        max_steps = budget.max_steps
        if record.lineage and "end_step" in record.lineage:  # PBT: from the parent's step, one interval on
            if record.attempt == 1:
                resume_step = int(record.lineage["start_step"]) or None
            end = int(record.lineage["end_step"])
            max_steps = end if max_steps is None else min(max_steps, end)
        return TrialSpec(
            trial_id=record.id,
            number=record.number,
            sweep_name=settings.sweep_name,
            config=record.config,
            objectives=settings.objectives,
            max_steps=max_steps,
            pass_trial=settings.pass_trial,
            sweep_id=self.sid,
            bracket=record.bracket,
            scheduler=settings.scheduler,
            min_steps=budget.min_steps,
            attempt=record.attempt,
            resume_step=resume_step,
            checkpoint_root=settings.checkpoint_root,
            max_total_steps=budget.max_total_steps,
        )


def _may_start(budget: Budget, counter: _Counter, started_in_this_run: int) -> bool:
    if budget.trials_per_run is not None and started_in_this_run >= budget.trials_per_run:
        return False
    return budget.max_trials is None or counter.started < budget.max_trials


def _spent_reason(budget: Budget, counter: _Counter, started_in_this_run: int) -> str:
    if budget.max_trials is not None and counter.started >= budget.max_trials:
        return f"max_trials={budget.max_trials} reached"
    if budget.trials_per_run is not None and started_in_this_run >= budget.trials_per_run:
        return f"trials_per_run={budget.trials_per_run} started in this run"
    return "budget spent"


#: How often the loop looks at the steps trials have reported, under a step budget.
STEP_BUDGET_POLL_S = 0.2
#: How often the loop asks its stop check (a controller) while no trial ends.
STOP_CHECK_POLL_S = 0.25


def _wake_in(status: BudgetStatus) -> float | None:
    """How long the loop may sleep before a budget needs checking (None: until an event)."""
    if status.budget.max_total_steps is not None:
        return STEP_BUDGET_POLL_S
    waits = [w for w in (status.left_time, status.left_compute_time) if w is not None]
    if not waits:
        return None
    # compute time runs faster than wall time when several trials run at once
    return max(0.05, min(waits) / max(1, status.usage.running))


__all__ = ["LoopResult", "LoopSettings", "Reporter", "run_loop"]
