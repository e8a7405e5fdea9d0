"""Small in-memory stand-ins for the loop's parts: a store, an executor, a clock and a few strategies.

They keep the real contracts the loop relies on (the store's transition table, "an end is committed before
the loop hears of it", "first end of an attempt wins") and nothing else: no SQL, no processes, no Prefect.
A trial's id is its number + 100, so that a mix-up of the two shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prefect_hpo.budget import Budget, BudgetStatus, Usage
from prefect_hpo.errors import StoreError
from prefect_hpo.executors.base import TrialHandle
from prefect_hpo.loop_settings import LoopSettings
from prefect_hpo.objective import Objective
from prefect_hpo.options import SweepOptions
from prefect_hpo.records import (
    ALLOWED_TRANSITIONS,
    Config,
    Outcome,
    TrialRecord,
    TrialState,
    is_interrupt_request,
)
from prefect_hpo.space import Float
from prefect_hpo.strategies.base import Answer
from prefect_hpo.trial import TrialSpec

SWEEP = 1
_NOT_CHARGED = (TrialState.PRUNED_DUPLICATE, TrialState.PRUNED_INVALID)


class Clock:
    """Time that moves only when told (the executor moves it by the loop's wait timeout)."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MemoryStore:
    """A `LoopStore` over a dict of frozen records (one sweep), with the real store's transition checks."""

    def __init__(self) -> None:
        self.records: dict[int, TrialRecord] = {}
        self.rung_rows: list[tuple[int, int, int, int, float]] = []  # id, trial number, bracket, level, score
        self.moves: list[tuple[int, TrialState, str | None]] = []  # (trial number, new state, reason) in order

    # ---- what the loop calls ----

    def trials(self, sweep_id: int, states: Iterable[TrialState] | None = None) -> list[TrialRecord]:
        wanted = None if states is None else set(states)
        return [r for _, r in sorted(self.records.items()) if wanted is None or r.state in wanted]

    def trial(self, sweep_id: int, number: int) -> TrialRecord:
        if number not in self.records:
            raise StoreError(f"sweep {sweep_id} has no trial {number}")
        return self.records[number]

    def next_number(self, sweep_id: int) -> int:
        return max(self.records, default=-1) + 1

    def usage(self, sweep_id: int) -> Usage:
        charged = [r for r in self.records.values() if r.state not in _NOT_CHARGED]
        return Usage(
            trials_started=len(charged),
            trials_finished=sum(r.state.is_finished for r in charged),
            trials_failed=sum(r.state.is_failure for r in charged),
            running=sum(r.state == TrialState.RUNNING for r in charged),
            elapsed=0.0,
            compute_time=sum(r.duration or 0.0 for r in charged),
            total_steps=self.total_steps(sweep_id),
        )

    def total_steps(self, sweep_id: int) -> int:
        return sum(r.last_step or 0 for r in self.records.values() if r.state not in _NOT_CHARGED)

    def create_trial(
        self,
        sweep_id: int,
        number: int,
        config: Config,
        config_hash: str,
        state: TrialState = TrialState.RUNNING,
        *,
        values: Sequence[float] | None = None,
        metrics: Mapping[str, float] | None = None,
        reason: str | None = None,
        duplicate_of: int | None = None,
        bracket: int = 0,
        lineage: Mapping[str, Any] | None = None,
    ) -> TrialRecord:
        if number in self.records:
            raise StoreError(f"trial {number} of sweep {sweep_id} already exists")
        record = TrialRecord(
            id=number + 100,
            sweep_id=sweep_id,
            number=number,
            config=dict(config),
            config_hash=config_hash,
            state=state,
            values=tuple(values) if values is not None else None,
            metrics=dict(metrics or {}),
            reason=reason,
            duplicate_of=duplicate_of,
            bracket=bracket,
            lineage=dict(lineage) if lineage is not None else None,
        )
        self.records[number] = record
        return record

    def find_config(self, sweep_id: int, config_hash: str, states: Iterable[TrialState]) -> TrialRecord | None:
        wanted = set(states)
        return next((r for r in self.trials(sweep_id) if r.config_hash == config_hash and r.state in wanted), None)

    def resume_trial(self, trial_id: int) -> TrialRecord:
        record = self._by_id(trial_id)
        return self._move(record, TrialState.RUNNING, attempt=record.attempt + 1, reason=None, stop_requested=None)

    def end_attempt(self, trial_id: int, attempt: int, outcome: Outcome) -> TrialRecord:
        record = self._by_id(trial_id)
        if record.state != TrialState.RUNNING or record.attempt != attempt:
            return record  # the first end recorded wins
        changes: dict[str, Any] = {
            "values": outcome.values,
            "metrics": dict(outcome.metrics),
            "error": outcome.error,
            "reason": outcome.reason,
            "duration": (record.duration or 0.0) + outcome.duration,  # a resumed trial adds up
        }
        if outcome.last_step is not None:
            changes["last_step"] = outcome.last_step
        if outcome.state == TrialState.FAIL_RECOVERABLE:
            changes["failures"] = record.failures + 1
        return self._move(record, outcome.state, **changes)

    def give_up(self, trial_id: int, reason: str) -> TrialRecord:
        return self._move(self._by_id(trial_id), TrialState.FAIL, reason=reason)

    def leave_paused(self, sweep_id: int, reason: str) -> list[TrialRecord]:
        return [self._move(r, TrialState.PRUNED, reason=reason) for r in self.trials(sweep_id, [TrialState.PAUSED])]

    def rungs(self, sweep_id: int, after_id: int = 0) -> list[tuple[int, int, int, int, float]]:
        return [row for row in self.rung_rows if row[0] > after_id]

    def paused_at_rungs(self, sweep_id: int) -> list[tuple[int, int, int, float]]:
        out = []
        for record in self.trials(sweep_id, [TrialState.PAUSED]):
            _, number, bracket, level, score = max(
                (row for row in self.rung_rows if row[1] == record.number), key=lambda row: row[3]
            )
            out.append((number, bracket, level, score))
        return out

    def rung_scores(self, sweep_id: int, bracket: int, level: int) -> list[float]:
        return [row[4] for row in self.rung_rows if row[2] == bracket and row[3] == level]

    # ---- what a running trial would write ----

    def record_rung(self, number: int, bracket: int, level: int, score: float) -> None:
        self.rung_rows.append((len(self.rung_rows) + 1, number, bracket, level, score))

    def progress(self, number: int, step: int) -> None:
        """A report at `step` (only the step matters to the loop)."""
        self.records[number] = dataclasses.replace(self.records[number], last_step=step)

    # ---- internals ----

    def _by_id(self, trial_id: int) -> TrialRecord:
        return self.records[trial_id - 100]

    def _move(self, record: TrialRecord, target: TrialState, **changes: Any) -> TrialRecord:
        if target not in ALLOWED_TRANSITIONS.get(record.state, frozenset()):
            raise StoreError(f"trial {record.number}: cannot move from {record.state.value} to {target.value}")
        moved = dataclasses.replace(record, state=target, **changes)
        self.records[record.number] = moved
        self.moves.append((moved.number, target, moved.reason))
        return moved


#: How an attempt goes when the loop waits: its end (committed to the store by the executor), or None
#: while it keeps running.
Behaviour = Callable[[TrialHandle], Outcome | None]


def complete(value: Callable[[Config], float] = lambda c: float(c["x"])) -> Behaviour:
    """Every attempt completes at once with `value(config)`."""
    return lambda handle: Outcome(TrialState.COMPLETE, values=(value(handle.record.config),))


class ScriptedExecutor:
    """Ends pending attempts as `behaviour` says, oldest first, at most `ends_per_wait` per wait.

    A wait in which nothing ends moves the clock on by the loop's timeout (a wait without one, with nothing
    able to end, would hang a real loop: here it fails the test). A cancelled attempt ends at the next wait,
    PRUNED with the request as its reason, or INTERRUPTED for an interrupt's request.
    """

    def __init__(self, store: MemoryStore, clock: Clock, behaviour: Behaviour, ends_per_wait: int = 1) -> None:
        self.store, self.clock, self.behaviour, self.ends_per_wait = store, clock, behaviour, ends_per_wait
        self.pending: list[TrialHandle] = []
        self.submitted: list[tuple[int, int]] = []  # (number, attempt) in the order they were submitted
        self.specs: list[TrialSpec] = []
        self.cancelled: dict[int, str] = {}  # id(handle) -> request
        self.most_running = 0

    def submit(self, record: TrialRecord, spec: TrialSpec) -> TrialHandle:
        handle = TrialHandle(record=record, spec=spec, started=self.clock())
        self.pending.append(handle)
        self.submitted.append((record.number, record.attempt))
        self.specs.append(spec)
        self.most_running = max(self.most_running, len(self.pending))
        return handle

    def wait_any(self, handles: Sequence[TrialHandle], timeout: float | None) -> list[TrialHandle]:
        ended: list[TrialHandle] = []
        for handle in list(self.pending):
            if len(ended) == self.ends_per_wait:
                break
            request = self.cancelled.pop(id(handle), None)
            if request is not None:
                state = TrialState.INTERRUPTED if is_interrupt_request(request) else TrialState.PRUNED
                outcome: Outcome | None = Outcome(state, reason=request)
            else:
                outcome = self.behaviour(handle)
            if outcome is None:
                continue
            self.pending.remove(handle)
            handle.final = self.store.end_attempt(handle.record.id, handle.record.attempt, outcome)
            ended.append(handle)
        if not ended:
            assert timeout is not None, "the loop waits for ever, and no trial can end"
            self.clock.advance(timeout)
        return ended

    def cancel(self, handle: TrialHandle, reason: str) -> None:
        self.cancelled[id(handle)] = reason

    def close(self) -> None:
        pass


class AdoptingScriptedExecutor(ScriptedExecutor):
    """A `ScriptedExecutor` whose trials outlive their parent (an `AdoptingExecutor`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.adopted: list[int] = []

    def adopt(self, record: TrialRecord, spec: TrialSpec) -> TrialHandle:
        self.adopted.append(record.number)
        handle = TrialHandle(record=record, spec=spec, started=self.clock())
        self.pending.append(handle)
        return handle


class Listed:
    """Proposes the given answers in order (configurations, Suggestions, WAIT, ...), then None; records
    every trial it is told of."""

    def __init__(self, answers: Iterable[Answer]) -> None:
        self.answers = list(answers)
        self.told: list[TrialRecord] = []

    def ask(self) -> Answer:
        return self.answers.pop(0) if self.answers else None

    def tell(self, trial: TrialRecord) -> None:
        self.told.append(trial)


class Counting(Listed):
    """Proposes x = 0, 1, 2, ... for ever."""

    def __init__(self) -> None:
        super().__init__([])
        self.n = 0

    def ask(self) -> Answer:
        self.n += 1
        return {"x": self.n - 1}


class Silent:
    """A reporter that records what it hears."""

    def __init__(self) -> None:
        self.started: list[tuple[int, int]] = []
        self.ended: list[tuple[int, TrialState]] = []
        self.end_reason: str | None = None

    def trial_started(self, trial: TrialRecord) -> None:
        self.started.append((trial.number, trial.attempt))

    def trial_ended(self, trial: TrialRecord, status: BudgetStatus) -> None:
        self.ended.append((trial.number, trial.state))

    def sweep_ended(self, status: BudgetStatus, reason: str) -> None:
        self.end_reason = reason


#: LoopSettings' own fields; any other keyword of `loop_settings` is one of the sweep's options
_LOOP_FIELDS = {field.name for field in dataclasses.fields(LoopSettings)}


def _unused_train(config: Config) -> float:
    """The options' training function: the loop's fakes run trials themselves and never call it."""
    raise AssertionError("the loop runs trials through its executor only")


def loop_settings(
    budget: Budget, objectives: tuple[Objective, ...] = (Objective("loss"),), sweep_id: int = SWEEP, **given: Any
) -> LoopSettings:
    """What the sweep flow hands the loop: the sweep's options (`given`'s option fields over the defaults)
    and the loop's own fields (`given`'s scheduler, checkpoints, interrupted)."""
    options = SweepOptions.build(
        _unused_train,
        {"x": Float(0, 1)},
        list(objectives),
        budget,
        "sw",
        **{name: value for name, value in given.items() if name not in _LOOP_FIELDS},
    )
    own = {name: value for name, value in given.items() if name in _LOOP_FIELDS}
    return LoopSettings(options, sweep_id, "sw", pass_trial=False, **own)
