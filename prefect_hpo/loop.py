"""The search loop: keep every slot busy, hear each end at once, tell the strategy, check the budget.

Pure wiring of the narrow interfaces (strategy, store, executor, reporter); it
knows nothing of Prefect. Each new trial is committed to the store before it is
submitted, and each end is committed (by the executor) before the loop hears of
it, so the loop's own counters are a cache of what the store already says.

The store is any `LoopStore` (the dozen calls the loop makes), and the optional abilities of the
parts are declared Protocols, checked once when the loop starts: a `PromotingScheduler` that
promotes, a `MultiFidelityStrategy` that learns from rung scores, a `ResumableStrategy` that
rebuilds itself from the store, an `AdoptingExecutor` whose trials outlive a dead parent.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import fsspec

from prefect_hpo.errors import PrefectHPOError, StoreError, TooManyFailedTrials
from prefect_hpo.executors.base import AdoptingExecutor, Executor, TrialHandle
from prefect_hpo.failures import FailFast
from prefect_hpo.loop_budget import STOP_CHECK_POLL_S, UsageCounter, may_start, spent_reason, wake_in
from prefect_hpo.loop_proposals import Proposals
from prefect_hpo.loop_settings import LoopResult, LoopSettings, trial_spec
from prefect_hpo.loop_store import LoopStore
from prefect_hpo.records import Config, Outcome, TrialRecord, TrialState, interrupt_request
from prefect_hpo.reporting.base import Reporter
from prefect_hpo.resources import ResourceLedger, never_fits
from prefect_hpo.schedulers.base import PromotingScheduler
from prefect_hpo.space import config_hash
from prefect_hpo.strategies.base import Exhausted, MultiFidelityStrategy, ResumableStrategy, Strategy, Suggestion, Wait
from prefect_hpo.trial import TrialSpec


def run_loop(
    strategy: Strategy,
    store: LoopStore,
    executor: Executor,
    settings: LoopSettings,
    reporter: Reporter,
    clock: Callable[[], float] = time.time,
) -> LoopResult:
    """Run the sweep until its budget or its space is spent; returns how it ended.

    `clock` is the time the budget's limits are measured in (the executor's handles record their start
    in the same time)."""
    return _SweepLoop(strategy, store, executor, settings, reporter, clock).run()


class _SweepLoop:
    """One run of the loop: the trials in flight and the counters, between events."""

    def __init__(
        self,
        strategy: Strategy,
        store: LoopStore,
        executor: Executor,
        settings: LoopSettings,
        reporter: Reporter,
        clock: Callable[[], float],
    ) -> None:
        self.strategy, self.store, self.executor = strategy, store, executor
        self.settings, self.reporter = settings, reporter
        self.sid, self.budget = settings.sweep_id, settings.options.budget
        stored = store.trials(self.sid)
        self.proposals = Proposals(strategy, store, self.sid, settings.options, stored)
        if isinstance(strategy, ResumableStrategy):
            strategy.restore(stored)
        else:
            for past in stored:
                if past.state.is_finished:
                    strategy.tell(past)
        self.counter = UsageCounter(store.usage(self.sid), started_at=clock(), clock=clock)
        self.running: dict[int, TrialHandle] = {}
        #: trials an interrupt (or the parent's death) stopped in an earlier run: they run again (new attempts)
        #: before new ones; read when the run starts (`_reconcile_orphans`)
        self.interrupted: list[TrialRecord] = []
        self.started_in_this_run = 0
        self.rungs_seen = 0
        # the parts' optional abilities, looked up once (a Protocol check costs ~50 us)
        self.rung_learner = strategy if isinstance(strategy, MultiFidelityStrategy) else None
        scheduler = settings.scheduler
        self.promoter = scheduler if isinstance(scheduler, PromotingScheduler) and scheduler.promotes else None
        self.adopter = executor if isinstance(executor, AdoptingExecutor) else None
        self.fail_fast = FailFast(self.budget.fail_fast)  # counts this run's ends only
        #: who holds what of this machine's GPUs and cores (None: trials are placed where they run)
        inventory = settings.inventory
        self.ledger = None if inventory is None else ResourceLedger(inventory, self.budget.max_concurrent)
        #: new configurations that wait for resources to free, oldest first; `passed_over` counts the later ones
        #: that started before the oldest, and past `patience` nothing new starts before it (so a trial that
        #: needs two GPUs is not starved by a stream of small ones)
        self.held: list[tuple[Suggestion, str]] = []
        self.passed_over = 0
        self.patience = 2 * max(1, len(inventory.devices)) if inventory is not None else 0

    def run(self) -> LoopResult:
        self._reconcile_orphans()
        while True:
            if self.budget.max_total_steps is not None:
                self.counter.steps = self.store.total_steps(self.sid)  # trials report steps to the store
            if self.settings.interrupted is not None and (signal_name := self.settings.interrupted()):
                return self._interrupt(signal_name)
            if self.fail_fast.tripped:  # before the budget: the error it names is the news
                return self._stop(self.fail_fast.reason, self.fail_fast.error(self.settings.sweep_name))
            status = self.counter.status(self.budget, self.running)
            stop = status.stop_reason()
            if stop is None and self.settings.options.stop_check is not None:
                stop = self.settings.options.stop_check()
            if stop is not None:
                return self._stop(stop)
            self._tell_rungs()
            while len(self.running) < self.budget.max_concurrent and (self._resume_interrupted() or self._promote()):
                pass
            self._start_new_trials()
            if not self.running:
                reason = self.proposals.exhausted or spent_reason(self.budget, self.counter, self.started_in_this_run)
                self._leave_paused(f"paused at a rung and not promoted before the sweep ended ({reason})")
                self.reporter.sweep_ended(self.counter.status(self.budget, self.running), reason)
                return LoopResult("finished", reason)
            # counted with the trials just started: compute time runs N times as fast with N of them
            wake = wake_in(self.counter.status(self.budget, self.running))
            if self.settings.options.stop_check is not None or self.settings.interrupted is not None:
                wake = STOP_CHECK_POLL_S if wake is None else min(wake, STOP_CHECK_POLL_S)
            for handle in self.executor.wait_any(list(self.running.values()), timeout=wake):
                self._settle(handle)

    def _reconcile_orphans(self) -> None:
        """Trials left RUNNING by a parent that died (this loop holds the sweep now, so no one else runs them).

        An executor whose trials outlive their parent (flow runs on a work pool) adopts them: it watches
        the same attempt again, and its launch is idempotent. Elsewhere the trial died with its parent
        (its worker process dies with the parent), and whatever its worker recorded before is kept: a
        result the worker stored itself is the trial's end, not a trial to run again. One still RUNNING is
        recorded INTERRUPTED, like a trial a Ctrl-C stopped: it runs again first, as a new attempt from its
        last checkpoint, and the parent's death is not counted against `max_retries` (N deaths of the
        parent never make a good trial FAIL). Trials left FAIL_RECOVERABLE (their worker died, recorded,
        then the run ended before it retried them) run again up to max_retries, as they would have.
        """
        for orphan in self.store.trials(self.sid, [TrialState.RUNNING]):
            if self.adopter is not None:
                self.running[orphan.number] = self.adopter.adopt(orphan, self._spec(orphan))
                self.reporter.trial_started(orphan)
                continue
            cut_off = Outcome(TrialState.INTERRUPTED, reason=interrupt_request(PARENT_DIED))
            self.store.end_attempt(orphan.id, orphan.attempt, cut_off)
        self.interrupted = self.store.trials(self.sid, [TrialState.INTERRUPTED])
        # recoverable failures the previous run recorded but did not retry before it ended (its store failed)
        for failed in self.store.trials(self.sid, [TrialState.FAIL_RECOVERABLE]):
            self._retry_or_give_up(failed)
        # count from the store as it is now: an interrupted attempt that runs again is neither finished
        # nor failed (counted before it was retried, it showed as both in the end line, unlike result.budget)
        self.counter = UsageCounter(
            self.store.usage(self.sid), started_at=self.counter.started_at, clock=self.counter.clock
        )

    def _retry_or_give_up(self, failed: TrialRecord) -> None:
        if not self._retry(failed):
            final = self.store.give_up(failed.id, _gave_up(failed))
            self.counter.ended(final, 0.0)
            self.strategy.tell(final)
            self.reporter.trial_ended(final, self.counter.status(self.budget, self.running))

    def _stop(self, reason: str, error: PrefectHPOError | None = None) -> LoopResult:
        """Stop every running trial, leave the paused ones, and end: with `error` when given, or an error
        after too many failures."""
        self._end_running(f"sweep stopped: {reason}")
        self._leave_paused(f"paused when the sweep stopped: {reason}")
        status = self.counter.status(self.budget, self.running)
        self.reporter.sweep_ended(status, reason)
        if error is not None:
            raise error
        if status.too_many_failures:
            raise TooManyFailedTrials(
                f"sweep {self.settings.sweep_name!r} stopped: {reason}; look at the failed trials' errors "
                "(result.trials / the store), fix the training function, or raise budget.max_failed_trials"
            )
        return LoopResult("finished", reason)

    def _end_running(self, request: str) -> None:
        """Ask every running trial to stop with `request` and settle each as it ends."""
        for handle in self.running.values():
            self.executor.cancel(handle, request)
        while self.running:
            for handle in self.executor.wait_any(list(self.running.values()), timeout=None):
                self._settle(handle)

    def _interrupt(self, signal_name: str) -> LoopResult:
        """End every running trial INTERRUPTED (resumable; no retry counted) and leave paused ones paused.

        The strategy is told nothing of them: they have no result, and the next run asks them again."""
        self._end_running(interrupt_request(signal_name))
        reason = f"interrupted by {signal_name}"
        self.reporter.sweep_ended(self.counter.status(self.budget, self.running), reason)
        return LoopResult("interrupted", reason)

    def _resume_interrupted(self) -> bool:
        """Run the next trial an interrupt stopped in an earlier run again, if any (from its checkpoint), once
        its resources are free."""
        if not self.interrupted or not self._place(self.interrupted[0].number, self.interrupted[0].config):
            return False
        record = self.store.resume_trial(self.interrupted.pop(0).id)
        self._submit(record)
        return True

    def _start_new_trials(self) -> None:
        """Fill free slots with new configurations while the budget and the space allow (those waiting for
        resources first)."""
        self._start_held()
        while (
            self.proposals.exhausted is None
            and len(self.running) + len(self.held) < self.budget.max_concurrent
            and may_start(self.budget, self.counter, self.started_in_this_run, waiting=len(self.held))
        ):
            answer = self.strategy.ask()
            if isinstance(answer, Wait):
                return  # nothing to propose until a running trial ends
            if answer is None or isinstance(answer, Exhausted):
                self.proposals.exhausted = (answer or Exhausted()).reason
                return
            suggestion = self.proposals.suggestion(answer)
            if self.proposals.rejected(suggestion.config):
                continue
            key = config_hash(suggestion.config)
            # PBT's members go on with their configuration (`may_repeat`); others are asked again, within
            # the allowance of repeats in a row
            in_flight = () if suggestion.may_repeat else {h.record.config_hash for h in self.running.values()}
            if not suggestion.may_repeat and self.proposals.repeated(suggestion.config, key, in_flight):
                continue
            self._start_or_hold(suggestion, key)

    def _start_or_hold(self, suggestion: Suggestion, key: str) -> None:
        """Start a new configuration where its resources fit now, else keep it waiting (in order)."""
        if self.held and self.passed_over >= self.patience:
            self.held.append((suggestion, key))  # the oldest waiting trial has been passed over enough
        elif self._start(suggestion, key):
            self.passed_over += int(bool(self.held))
        else:
            self.held.append((suggestion, key))

    def _start_held(self) -> None:
        """Start the configurations waiting for resources that fit now, oldest first; a later one passes the
        oldest only `patience` times, then what frees up waits for it."""
        index = 0
        while index < len(self.held) and len(self.running) < self.budget.max_concurrent:
            oldest = index == 0
            if not oldest and self.passed_over >= self.patience:
                return
            if self._start(*self.held[index]):
                del self.held[index]
                self.passed_over = 0 if oldest else self.passed_over + 1
            else:
                index += 1

    def _place(self, number: int, config: Config) -> bool:
        """Hold this machine's resources for trial `number` if its request fits now (always, where trials are
        placed elsewhere). A request that can never fit stops the sweep, with what was asked and what exists."""
        if self.ledger is None:
            return True
        request = self.settings.options.requested(config)
        why = never_fits(request, self.ledger.inventory)
        if why is not None:
            self._stop(why, PrefectHPOError(f"trial {number} ({config}): {why}"))
        return self.ledger.place(number, request) is not None

    def _start(self, suggestion: Suggestion, key: str) -> bool:
        """Record a new trial RUNNING and submit it (from its parent's checkpoint, when it has one), if its
        resources fit now; False (nothing recorded) where they do not."""
        number = self.proposals.number
        if not self._place(number, suggestion.config):
            return False
        scheduler = self.settings.scheduler
        bracket = scheduler.bracket_for(number) if scheduler else 0
        lineage = suggestion.stored_lineage()
        record = self.proposals.create_trial(
            suggestion.config, key, TrialState.RUNNING, bracket=bracket, lineage=lineage
        )
        if suggestion.parent is not None:
            self._inherit_checkpoint(suggestion.parent, record.number)
        self.counter.started += 1
        self.started_in_this_run += 1
        self._submit(record)
        return True

    def _inherit_checkpoint(self, parent: int, child: int) -> None:
        """Copy the parent trial's checkpoint folder to the child's (PBT: exploit, or a member going on)."""
        layout = self.settings.checkpoints
        if layout is None:
            return
        source, target = layout.path(parent), layout.path(child)
        fs, source_path = fsspec.core.url_to_fs(source)
        if fs.exists(source_path):
            _, target_path = fsspec.core.url_to_fs(target)
            fs.copy(source_path.rstrip("/") + "/", target_path, recursive=True)

    def _promote(self) -> bool:
        """Resume the best promotable paused trial, if any (promotion-form schedulers)."""
        if self.promoter is None:
            return False
        choice = self.promoter.next_promotion(self.store, self.sid)
        if choice is None:
            return False
        paused = self.store.trial(self.sid, choice[0])
        if not self._place(paused.number, paused.config):
            return False
        record = self.store.resume_trial(paused.id)
        self._submit(record)
        return True

    def _settle(self, handle: TrialHandle) -> None:
        """Take in one ended attempt: count it, tell the strategy, report it."""
        self.running.pop(handle.record.number, None)
        if self.ledger is not None:
            self.ledger.release(handle.record.number)  # however it ended: a dead trial's devices are free at once
        if handle.error is not None:
            raise handle.error
        final = handle.final
        if final is None:
            raise StoreError(f"trial {handle.record.number} ended without a recorded state")
        if final.state == TrialState.FAIL_RECOVERABLE:
            if self._interrupting():
                # Its worker died as the sweep was interrupted (a SIGTERM to the whole process group, as a
                # scheduler or systemd sends, reaches the workers too): no new attempt now, after the stop;
                # it stays FAIL_RECOVERABLE, counted among the trials to run again, and the same call, run
                # again, retries it first.
                return
            if self._retry(final):
                return
            final = self.store.give_up(final.id, _gave_up(final))
        self.counter.ended(final, handle.record.duration or 0.0)
        self.fail_fast.saw(final)
        if final.state.is_finished:
            self.strategy.tell(final)
        self.reporter.trial_ended(final, self.counter.status(self.budget, self.running))

    def _interrupting(self) -> bool:
        return self.settings.interrupted is not None and self.settings.interrupted() is not None

    def _retry(self, trial: TrialRecord) -> bool:
        """Run a recoverable failure (its worker died) again as a new attempt, up to max_retries times
        (failed attempts: those an interruption or the parent's death cut off are not counted)."""
        if trial.failures > self.settings.options.max_retries:
            return False
        if not self._place(trial.number, trial.config):
            self.interrupted.append(trial)  # runs again first, once its resources are free
            return True
        record = self.store.resume_trial(trial.id)
        self._submit(record)
        return True

    def _tell_rungs(self) -> None:
        """Pass rung scores stored since the last look to a strategy that learns from them (BOHB)."""
        if self.rung_learner is None:
            return
        for rung_id, trial_number, _bracket, level, score in self.store.rungs(self.sid, after_id=self.rungs_seen):
            handle = self.running.get(trial_number)
            config = handle.record.config if handle else self.store.trial(self.sid, trial_number).config
            self.rung_learner.tell_rung(config, level, score)
            self.rungs_seen = rung_id

    def _leave_paused(self, reason: str) -> None:
        for left in self.store.leave_paused(self.sid, reason):
            self.strategy.tell(left)
            self.reporter.trial_ended(left, self.counter.status(self.budget, self.running))

    def _submit(self, record: TrialRecord) -> None:
        """Hand a trial recorded RUNNING to the executor, and tell the reporter (with the devices it holds)."""
        spec = self._spec(record)
        self.running[record.number] = self.executor.submit(record, spec)
        self.reporter.trial_started(dataclasses.replace(record, devices=spec.devices) if spec.devices else record)

    def _spec(self, record: TrialRecord) -> TrialSpec:
        placement = self.ledger.holding(record.number) if self.ledger is not None else None
        return trial_spec(record, self.settings, placement)


#: Why a trial the previous run's parent left RUNNING is INTERRUPTED (after "interrupted: ").
PARENT_DIED = "the sweep's parent process died while this trial ran; it runs again as a new attempt"


def _gave_up(trial: TrialRecord) -> str:
    """Why a trial is FAIL after its last recoverable failure: the failed attempts, and the attempts in all
    where others (interrupted, cut off by a parent's death) came between."""
    runs = "" if trial.failures == trial.attempt else f" (of {trial.attempt} attempts)"
    return f"gave up after {trial.failures} failed attempts{runs}: {trial.error}"


__all__ = ["LoopResult", "LoopSettings", "LoopStore", "run_loop"]
