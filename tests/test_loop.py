"""The search loop on its own: in-memory store, scripted executor, fake clock (tests/loop_fakes.py).

No Prefect, no database, no process: each test runs the real `run_loop` in milliseconds, and every wait
the loop makes moves the fake clock instead of sleeping.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from prefect_hpo.budget import Budget
from prefect_hpo.checkpoint_layout import CheckpointLayout
from prefect_hpo.errors import PrefectHPOError, StrategyError, TooManyFailedTrials, TrialsFailAlike
from prefect_hpo.executors.base import TrialHandle
from prefect_hpo.loop import PARENT_DIED, LoopResult, run_loop
from prefect_hpo.loop_budget import STOP_CHECK_POLL_S
from prefect_hpo.records import Outcome, TrialRecord, TrialState, interrupt_request
from prefect_hpo.resources import Inventory
from prefect_hpo.schedulers import ASHAScheduler
from prefect_hpo.space import config_hash
from prefect_hpo.strategies.base import WAIT, Exhausted, Suggestion
from prefect_hpo.trial import TrialSpec
from tests.loop_fakes import (
    SWEEP,
    AdoptingScriptedExecutor,
    Behaviour,
    Clock,
    Counting,
    Listed,
    MemoryStore,
    ScriptedExecutor,
    Silent,
    complete,
    loop_settings,
)

ROOT = Path(__file__).resolve().parents[1]


def runs_for_ever(handle: TrialHandle) -> Outcome | None:
    return None


def by_attempt(*outcomes: Outcome | None) -> Behaviour:
    """Attempt k of every trial ends with outcomes[k - 1] (the last one for later attempts)."""
    return lambda handle: outcomes[min(handle.record.attempt, len(outcomes)) - 1]


class Run:
    """One call of `run_loop` over the fakes, and what it left behind."""

    def __init__(
        self,
        strategy: Any,
        budget: Budget,
        behaviour: Behaviour | None = None,
        *,
        store: MemoryStore | None = None,
        clock: Clock | None = None,
        ends_per_wait: int = 1,
        executor: type[ScriptedExecutor] = ScriptedExecutor,
        **settings: Any,
    ) -> None:
        self.strategy = strategy
        self.store = store or MemoryStore()
        self.clock = clock or Clock()
        self.started_at = self.clock()
        self.executor = executor(self.store, self.clock, behaviour or complete(), ends_per_wait)
        self.reporter = Silent()
        self.result = run_loop(
            strategy, self.store, self.executor, loop_settings(budget, **settings), self.reporter, clock=self.clock
        )

    @property
    def waited(self) -> float:
        """Seconds the loop spent waiting with nothing ending (on the fake clock)."""
        return self.clock() - self.started_at

    def states(self) -> list[TrialState]:
        return [r.state for r in self.store.trials(SWEEP)]

    def record(self, number: int) -> TrialRecord:
        return self.store.trial(SWEEP, number)


class TestSlots:
    def test_every_free_slot_is_filled_and_each_end_refills_one(self) -> None:
        sizes: list[int] = []

        class Counted(ScriptedExecutor):
            def submit(self, record: TrialRecord, spec: TrialSpec) -> TrialHandle:
                sizes.append(len(self.pending))  # trials running when this one is submitted
                return super().submit(record, spec)

        run = Run(Counting(), Budget(max_trials=7, max_concurrent=3, max_steps=9, min_steps=2), executor=Counted)
        assert sizes == [0, 1, 2, 2, 2, 2, 2]  # three at once, then one per end
        assert (
            run.result
            == LoopResult("finished", "max_trials=7 reached")
            == LoopResult("finished", str(run.reporter.end_reason))
        )
        assert run.executor.submitted == [(n, 1) for n in range(7)]
        assert run.states() == [TrialState.COMPLETE] * 7
        assert [t.number for t in run.strategy.told] == list(range(7))
        assert [s.config for s in run.executor.specs] == [{"x": n} for n in range(7)]
        assert {(s.max_steps, s.min_steps, s.resume_step) for s in run.executor.specs} == {(9, 2, None)}

    def test_several_ends_at_once_free_as_many_slots(self) -> None:
        run = Run(Counting(), Budget(max_trials=8, max_concurrent=4), ends_per_wait=4)
        assert run.executor.most_running == 4 and len(run.states()) == 8
        assert run.result.reason == "max_trials=8 reached"


class TestStrategyAnswers:
    def test_wait_holds_the_free_slots_until_a_trial_ends(self) -> None:
        run = Run(Listed([{"x": 0}, WAIT, {"x": 1}, {"x": 2}]), Budget(max_trials=5, max_concurrent=3))
        assert run.executor.most_running == 2  # x=0 alone; x=1 and x=2 once it ended
        assert run.executor.submitted == [(0, 1), (1, 1), (2, 1)]
        assert run.result.reason == "search space exhausted"  # None after the list

    def test_exhausted_carries_the_reason_the_sweep_ends_with(self) -> None:
        run = Run(Listed([{"x": 0}, Exhausted("the plan is done")]), Budget(max_trials=5))
        assert run.result == LoopResult("finished", "the plan is done") and len(run.states()) == 1

    def test_an_answer_that_is_no_proposal_is_refused_with_the_fix(self) -> None:
        with pytest.raises(StrategyError, match=r"Listed\.ask\(\) returned \[1, 2\]; return a Suggestion"):
            Run(Listed([[1, 2]]), Budget(max_trials=5))

    def test_a_suggestion_with_a_parent_starts_from_its_checkpoint_and_steps(self, tmp_path: Path) -> None:
        def saves(handle: TrialHandle) -> Outcome:
            folder = Path(str(handle.spec.checkpoint_path))
            if not folder.exists():  # the first trial trains from scratch and saves its state
                folder.mkdir(parents=True)
                (folder / "state.txt").write_text(f"trained by trial {handle.record.number}")
            return Outcome(TrialState.COMPLETE, values=(1.0,), last_step=handle.spec.max_steps)

        child = Suggestion({"x": 1}, parent=0, resume_step=5, end_step=10, may_repeat=True, lineage={"member": 0})
        layout = CheckpointLayout(root=str(tmp_path), folder="sw")
        run = Run(Listed([{"x": 1}, child]), Budget(max_trials=2, max_steps=8), saves, checkpoints=layout)
        assert run.states() == [TrialState.COMPLETE] * 2  # the same configuration, on purpose: no duplicate
        assert run.record(0).lineage is None
        assert run.record(1).lineage == {"member": 0, "parent": 0, "start_step": 5, "end_step": 10}
        spec = run.executor.specs[1]
        assert (spec.resume_step, spec.max_steps) == (5, 8)  # from the parent's step; the budget's cap wins
        assert (tmp_path / "sw" / "trial-1" / "state.txt").read_text() == "trained by trial 0"

    def test_a_resumable_strategy_restores_from_the_store_and_a_plain_one_is_told(self) -> None:
        store = MemoryStore()
        Run(Listed([{"x": 0}, {"x": 1}]), Budget(max_trials=5), store=store)
        store.create_trial(SWEEP, 2, {"x": 2}, config_hash({"x": 2}), TrialState.PAUSED)

        class Restoring(Listed):
            def restore(self, trials: list[TrialRecord]) -> None:
                self.restored = [t.number for t in trials]

        restoring, plain = Restoring([]), Listed([])
        Run(restoring, Budget(max_trials=3), store=store)  # the paused trial is left when it ends: told
        assert restoring.restored == [0, 1, 2] and [(t.number, t.state) for t in restoring.told] == [
            (2, TrialState.PRUNED)
        ]
        Run(plain, Budget(max_trials=3), store=store)
        assert [t.number for t in plain.told] == [0, 1, 2]  # finished ones only; all three are by now


class TestDuplicates:
    def test_a_repeat_of_a_finished_trial_reuses_its_result_and_costs_no_budget(self) -> None:
        run = Run(Listed([{"x": 3}, {"x": 3}, {"x": 4}]), Budget(max_trials=5))
        assert run.states() == [TrialState.COMPLETE, TrialState.PRUNED_DUPLICATE, TrialState.COMPLETE]
        duplicate = run.record(1)
        assert (duplicate.duplicate_of, duplicate.values) == (0, (3.0,))
        assert duplicate.reason == "same configuration as trial 0"
        assert [t.number for t in run.strategy.told] == [0, 1, 2]
        assert run.executor.submitted == [(0, 1), (2, 1)] and run.store.usage(SWEEP).trials_started == 2

    def test_a_repeat_of_a_trial_in_flight_is_asked_again_without_a_record(self) -> None:
        run = Run(Listed([{"x": 0}, {"x": 0}, {"x": 1}]), Budget(max_trials=5, max_concurrent=2))
        assert [r.config for r in run.store.trials(SWEEP)] == [{"x": 0}, {"x": 1}]
        assert run.states() == [TrialState.COMPLETE] * 2

    def test_too_many_repeats_in_a_row_end_the_sweep(self) -> None:
        run = Run(Listed([{"x": 0}] * 10), Budget(max_trials=5), max_consecutive_duplicates=3)
        assert run.states() == [TrialState.COMPLETE] + [TrialState.PRUNED_DUPLICATE] * 3
        assert run.result.reason == (
            "search space exhausted: 3 proposals in a row repeated configurations already evaluated"
        )


class TestConstraint:
    def test_a_rejected_configuration_is_stored_invalid_told_and_not_charged(self) -> None:
        run = Run(Counting(), Budget(max_trials=3), constraint=lambda c: "x is odd" if c["x"] % 2 else True)
        assert run.states() == [TrialState.COMPLETE, TrialState.PRUNED_INVALID] * 2 + [TrialState.COMPLETE]
        assert {run.record(n).reason for n in (1, 3)} == {"x is odd"}
        assert [(t.number, t.state) for t in run.strategy.told][:2] == [
            (0, TrialState.COMPLETE),
            (1, TrialState.PRUNED_INVALID),
        ]
        assert run.executor.submitted == [(0, 1), (2, 1), (4, 1)] and run.result.reason == "max_trials=3 reached"

    def test_rejections_in_a_row_end_the_sweep_with_the_fix(self) -> None:
        run = Run(Counting(), Budget(max_trials=3), constraint=lambda c: False, max_rejections_in_a_row=4)
        assert run.states() == [TrialState.PRUNED_INVALID] * 4 and not run.executor.submitted
        assert run.record(0).reason == "rejected by the constraint"
        assert run.result.reason.startswith("the constraint rejected 4 configurations in a row; loosen the constraint")


class TestRetries:
    def test_a_recoverable_failure_runs_again_until_it_gives_up(self) -> None:
        died = Outcome(TrialState.FAIL_RECOVERABLE, error="worker died")

        def behaviour(handle: TrialHandle) -> Outcome:
            if handle.record.config["x"] == 0 and handle.record.attempt == 2:
                return Outcome(TrialState.COMPLETE, values=(0.0,))
            return died

        run = Run(Counting(), Budget(max_trials=2), behaviour, max_retries=2)
        assert run.executor.submitted == [(0, 1), (0, 2), (1, 1), (1, 2), (1, 3)]
        assert run.states() == [TrialState.COMPLETE, TrialState.FAIL]
        assert run.record(1).reason == "gave up after 3 failed attempts: worker died"
        assert [(t.number, t.state) for t in run.strategy.told] == [(0, TrialState.COMPLETE), (1, TrialState.FAIL)]

    def test_recoverable_failures_a_previous_run_left_are_retried_or_given_up_first(self) -> None:
        store = MemoryStore()
        for number, failures in ((0, 1), (1, 3)):
            record = store.create_trial(SWEEP, number, {"x": number}, config_hash({"x": number}))
            for attempt in range(1, failures + 1):
                record = store.end_attempt(record.id, attempt, Outcome(TrialState.FAIL_RECOVERABLE, error="oom"))
                if attempt < failures:
                    record = store.resume_trial(record.id)
        run = Run(Counting(), Budget(max_trials=2), store=store, max_retries=2)
        assert run.executor.submitted == [(0, 2)]  # trial 1 had failed 3 times: no more
        assert run.states() == [TrialState.COMPLETE, TrialState.FAIL]
        assert run.record(1).reason == "gave up after 3 failed attempts: oom"

    def test_a_worker_that_dies_as_the_sweep_is_interrupted_runs_again_only_in_the_next_run(self) -> None:
        """A SIGTERM to the whole process group ends the workers too: no new attempt after the stop."""
        store = MemoryStore()
        died = Outcome(TrialState.FAIL_RECOVERABLE, error="the worker process died with exit code -15")
        first = Run(
            Counting(), Budget(max_trials=2, max_concurrent=2), by_attempt(died, None), store=store,
            ends_per_wait=2, max_retries=2, interrupted=lambda: "SIGTERM" if store.trials(SWEEP) else None,
        )  # fmt: skip
        assert first.result == LoopResult("interrupted", "interrupted by SIGTERM")
        assert first.executor.submitted == [(0, 1), (1, 1)]  # no second attempt after the signal
        assert first.states() == [TrialState.FAIL_RECOVERABLE] * 2
        second = Run(Counting(), Budget(max_trials=2, max_concurrent=2), complete(), store=store, max_retries=2)
        assert second.executor.submitted == [(0, 2), (1, 2)] and second.states() == [TrialState.COMPLETE] * 2


class TestPromotionAndPause:
    def test_asha_promotes_the_best_paused_trial_before_starting_a_new_one(self) -> None:
        """Rungs at steps 1 and 3 (max_t 9, keep the top third): hand-computed order below."""
        asha = ASHAScheduler(max_t=9, grace_period=1, reduction_factor=3, mode="promotion")
        store = MemoryStore()
        rungs_told: list[tuple[float, int, float]] = []

        class Learner(Listed):
            def tell_rung(self, config: dict[str, Any], level: int, score: float) -> None:
                rungs_told.append((config["x"], level, score))

        def climbs(handle: TrialHandle) -> Outcome:
            """Each attempt trains to the next rung and pauses there; the last one completes at max_t."""
            x, attempt = handle.record.config["x"], handle.record.attempt
            if attempt > len(asha.levels):
                return Outcome(TrialState.COMPLETE, values=(x,), last_step=9)
            level = asha.levels[attempt - 1]
            store.record_rung(handle.record.number, handle.record.bracket, level, x)
            return Outcome(TrialState.PAUSED, values=(x,), last_step=level)

        strategy = Learner([{"x": x} for x in (0.5, 0.9, 0.1, 0.7)])
        run = Run(strategy, Budget(max_trials=4), climbs, store=store, scheduler=asha)
        # 0.5 is alone at each rung: promoted to the end. 0.9 is not the best at rung 1: a new trial starts.
        # 0.1 is best at rung 1 and rung 3: promoted to the end. 0.7 is not: the budget is spent.
        assert run.executor.submitted == [(0, 1), (0, 2), (0, 3), (1, 1), (2, 1), (2, 2), (2, 3), (3, 1)]
        assert [s.resume_step for s in run.executor.specs] == [None, 1, 3, None, None, 1, 3, None]
        assert run.states() == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE, TrialState.PRUNED]
        left = "paused at a rung and not promoted before the sweep ended (max_trials=4 reached)"
        assert run.record(1).reason == run.record(3).reason == left
        assert rungs_told[:3] == [(0.5, 1, 0.5), (0.5, 3, 0.5), (0.9, 1, 0.9)]  # each rung score, in arrival order
        assert rungs_told == [(store.trial(SWEEP, n).config["x"], level, s) for _, n, _, level, s in store.rung_rows]

    def test_paused_trials_are_left_when_the_sweep_stops(self) -> None:
        pauses = lambda h: Outcome(TrialState.PAUSED, last_step=1) if h.record.number == 0 else None  # noqa: E731
        clock = Clock()
        stop = lambda: "stop() called" if clock() >= 1_001.0 else None  # noqa: E731
        run = Run(Counting(), Budget(max_trials=5, max_concurrent=2), pauses, clock=clock, stop_check=stop)
        assert run.result == LoopResult("finished", "stop() called")
        assert run.waited == 4 * STOP_CHECK_POLL_S  # asked every 0.25 s while nothing ended
        assert run.states() == [TrialState.PRUNED] * 3
        assert run.record(0).reason == "paused when the sweep stopped: stop() called"
        assert run.record(1).reason == run.record(2).reason == "sweep stopped: stop() called"

    def test_an_interrupt_ends_running_trials_interrupted_and_the_next_run_resumes_them_first(self) -> None:
        store, clock = MemoryStore(), Clock()

        def first_ends(handle: TrialHandle) -> Outcome | None:
            if handle.record.number == 0:
                return Outcome(TrialState.COMPLETE, values=(0.0,))
            store.progress(handle.record.number, 3)  # trial 1 reports step 3 and goes on
            return None

        def ctrl_c() -> str | None:
            return "Ctrl-C (SIGINT)" if store.trials(SWEEP, [TrialState.COMPLETE]) else None

        budget = Budget(max_trials=3, max_concurrent=2)
        first = Run(Counting(), budget, first_ends, store=store, clock=clock, ends_per_wait=2, interrupted=ctrl_c)
        assert first.result == LoopResult("interrupted", "interrupted by Ctrl-C (SIGINT)")
        assert first.states() == [TrialState.COMPLETE, TrialState.INTERRUPTED]
        assert first.record(1).reason == interrupt_request("Ctrl-C (SIGINT)")
        assert [t.number for t in first.strategy.told] == [0]  # an interrupted trial has no result to tell
        second = Run(Listed([{"x": 9}]), budget, store=store, clock=clock)
        assert second.executor.submitted == [(1, 2), (2, 1)]  # the interrupted trial first, from its step
        assert second.executor.specs[0].resume_step == 3 and second.states() == [TrialState.COMPLETE] * 3

    def test_a_trial_a_dead_parent_left_running_runs_again_or_is_adopted(self) -> None:
        def orphaned() -> MemoryStore:
            store = MemoryStore()
            store.create_trial(SWEEP, 0, {"x": 0}, config_hash({"x": 0}))  # RUNNING, and its parent is gone
            return store

        rerun = Run(Listed([]), Budget(max_trials=1), store=orphaned())
        assert rerun.executor.submitted == [(0, 2)] and rerun.record(0).state == TrialState.COMPLETE
        adopted = Run(Listed([]), Budget(max_trials=1), store=orphaned(), executor=AdoptingScriptedExecutor)
        assert isinstance(adopted.executor, AdoptingScriptedExecutor)
        assert adopted.executor.adopted == [0] and not adopted.executor.submitted
        assert adopted.record(0).attempt == 1 and adopted.record(0).state == TrialState.COMPLETE
        assert (0, TrialState.INTERRUPTED, interrupt_request(PARENT_DIED)) in rerun.store.moves
        assert all(state != TrialState.INTERRUPTED for _, state, _ in adopted.store.moves)


class TestBudget:
    """Every kind of limit ends the sweep with its own reason, the running trials stopped."""

    def test_trials_per_run_and_max_trials_over_two_runs(self) -> None:
        store = MemoryStore()
        first = Run(Counting(), Budget(max_trials=5, trials_per_run=3), store=store)
        assert first.result.reason == "trials_per_run=3 started in this run" and len(first.states()) == 3
        second = Run(Listed([{"x": 10 + n} for n in range(9)]), Budget(max_trials=5, trials_per_run=3), store=store)
        assert second.result.reason == "max_trials=5 reached" and second.executor.submitted == [(3, 1), (4, 1)]

    def test_time_limit(self) -> None:
        run = Run(Counting(), Budget(time_limit=60, max_concurrent=2), runs_for_ever)
        assert run.result.reason == "time_limit of 60s reached"
        assert 60 <= run.waited < 60.1  # it slept towards the limit, not past it
        assert run.states() == [TrialState.PRUNED] * 2
        assert run.record(0).reason == "sweep stopped: time_limit of 60s reached"

    def test_compute_time_of_ended_trials(self) -> None:
        ten_seconds = lambda h: Outcome(TrialState.COMPLETE, values=(1.0,), duration=10.0)  # noqa: E731
        run = Run(Counting(), Budget(max_trials=None, compute_time_limit=35), ten_seconds)
        assert run.result.reason == "compute_time_limit of 35s reached" and len(run.states()) == 4

    def test_compute_time_of_running_trials_counts_every_slot(self) -> None:
        run = Run(Counting(), Budget(max_trials=None, compute_time_limit=10, max_concurrent=2), runs_for_ever)
        assert run.result.reason == "compute_time_limit of 10s reached"
        assert run.waited == 5.0  # two trials running 5 s each
        assert run.states() == [TrialState.PRUNED] * 2

    def test_max_total_steps(self) -> None:
        store = MemoryStore()

        def steps(handle: TrialHandle) -> Outcome | None:
            """One step per wait; complete at step 10."""
            step = (store.trial(SWEEP, handle.record.number).last_step or 0) + 1
            store.progress(handle.record.number, step)
            return Outcome(TrialState.COMPLETE, values=(1.0,), last_step=step) if step == 10 else None

        run = Run(Counting(), Budget(max_trials=None, max_total_steps=15, max_concurrent=2), steps, store=store)
        assert run.result.reason == "max_total_steps=15 reached"
        assert run.store.total_steps(SWEEP) == 16 and run.states() == [TrialState.PRUNED] * 2
        assert {s.max_total_steps for s in run.executor.specs} == {15}  # trials stop themselves too

    def test_max_failed_trials(self) -> None:
        fails = lambda h: Outcome(TrialState.FAIL, error=f"error {h.record.number}")  # noqa: E731
        with pytest.raises(TooManyFailedTrials, match="3 trials failed, more than max_failed_trials=2"):
            Run(Counting(), Budget(max_trials=10, max_failed_trials=2, fail_fast=None), fails)

    def test_fail_fast(self) -> None:
        fails = lambda h: Outcome(TrialState.FAIL, error="KeyError: 'lr'")  # noqa: E731
        with pytest.raises(TrialsFailAlike, match=r"3 trials \(0, 1, 2\) failed with the same error"):
            Run(Counting(), Budget(max_trials=10, max_concurrent=4), fails, ends_per_wait=3)


def test_the_loop_and_these_tests_run_without_prefect() -> None:
    """A fresh interpreter imports this module (the loop and its parts) and finds no Prefect loaded."""
    check = (
        "import sys, tests.test_loop; "
        "loaded = sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')); "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


class TestResources:
    """Trials placed on a declared inventory (no GPU needed): never over-packed, each device kept busy."""

    @staticmethod
    def _usage_checked(spans: list[dict[str, float]]) -> type[ScriptedExecutor]:
        """An executor that records each device's share held after every start, and frees it at each end."""

        class Placed(ScriptedExecutor):
            def __init__(self, *args: Any) -> None:
                super().__init__(*args)
                self.held: dict[str, float] = {}

            def submit(self, record: TrialRecord, spec: TrialSpec) -> TrialHandle:
                share = min(1.0, spec.resources.get("gpu", 0.0))
                for device in spec.devices:
                    self.held[device] = self.held.get(device, 0.0) + share
                spans.append(dict(self.held))
                return super().submit(record, spec)

            def wait_any(self, handles: Any, timeout: float | None) -> list[TrialHandle]:
                ended = super().wait_any(handles, timeout)
                for handle in ended:
                    for device in handle.spec.devices:
                        self.held[device] -= min(1.0, handle.spec.resources.get("gpu", 0.0))
                return ended

        return Placed

    def test_mixed_sizes_never_over_pack_a_device_and_fill_every_one(self) -> None:
        spans: list[dict[str, float]] = []
        sizes = [0.25, 0.5, 1, 2]
        run = Run(
            Counting(),
            Budget(max_trials=24, max_concurrent=8),
            executor=self._usage_checked(spans),
            resources=lambda c: {"gpu": sizes[int(c["x"]) % 4]},
            inventory=Inventory(devices=("0", "1", "2", "3"), cpus=8),
        )
        assert run.states() == [TrialState.COMPLETE] * 24
        assert max(max(span.values()) for span in spans) <= 1.0  # no device over-packed, ever
        assert any(len(span) == 4 and min(span.values()) > 0 for span in spans)  # all four busy at once
        two = [s for s in run.executor.specs if s.resources == {"gpu": 2.0}]
        assert len(two) == 6 and all(len(set(s.devices)) == 2 for s in two)
        assert [s.config["x"] for s in run.executor.specs] != list(range(24))  # smaller ones went ahead

    def test_a_trial_that_dies_frees_its_device_and_runs_again_first(self) -> None:
        died = Outcome(TrialState.FAIL_RECOVERABLE, error="the worker process died with exit code -9")
        run = Run(
            Counting(),
            Budget(max_trials=3, max_concurrent=2),
            lambda h: died if (h.record.number, h.record.attempt) == (0, 1) else Outcome(TrialState.COMPLETE, (1.0,)),
            resources={"gpu": 1},
            inventory=Inventory(devices=("7",), cpus=2),
        )
        assert run.executor.submitted == [(0, 1), (0, 2), (1, 1), (2, 1)]
        assert run.executor.most_running == 1  # one device: one trial at a time, though two slots
        assert {s.devices for s in run.executor.specs} == {("7",)}
        assert run.states() == [TrialState.COMPLETE] * 3

    def test_a_large_request_is_not_starved_by_small_ones(self) -> None:
        run = Run(
            Counting(),
            Budget(max_trials=30, max_concurrent=4),
            resources=lambda c: {"gpu": 2 if c["x"] == 1 else 1},
            inventory=Inventory(devices=("0", "1"), cpus=4),
        )
        order = [s.config["x"] for s in run.executor.specs]
        assert order.index(1) <= 1 + 2 * 2  # passed over at most `patience` (2 per device) times
        assert run.states() == [TrialState.COMPLETE] * 30

    def test_each_trial_gets_an_even_share_of_the_cores_as_its_threads(self) -> None:
        run = Run(Counting(), Budget(max_trials=4, max_concurrent=4), inventory=Inventory(cpus=8))
        assert {s.cpu_threads for s in run.executor.specs} == {2}
        budget = Budget(max_trials=2, max_concurrent=2)
        asked = Run(Counting(), budget, resources={"cpu": 3}, inventory=Inventory(cpus=8))
        assert {(s.cpu_threads, tuple(s.resources.items())) for s in asked.executor.specs} == {(3, (("cpu", 3.0),))}

    def test_a_configuration_whose_request_can_never_fit_stops_the_sweep_with_what_exists(self) -> None:
        never = r"trial 1 \(\{'x': 1\}\): resources\['gpu'\]=2 but this machine has 1"
        with pytest.raises(PrefectHPOError, match=never):
            Run(
                Counting(),
                Budget(max_trials=5, max_concurrent=1),
                resources=lambda c: {"gpu": 2 if c["x"] == 1 else 1},
                inventory=Inventory(devices=("0",), cpus=2),
            )

    def test_trials_placed_elsewhere_carry_their_request_and_hold_nothing_here(self) -> None:
        run = Run(Counting(), Budget(max_trials=2), resources={"gpu": 1})  # no inventory: a work pool's hosts
        assert {(s.devices, s.cpu_threads, tuple(s.resources.items())) for s in run.executor.specs} == {
            ((), None, (("gpu", 1.0),))
        }
