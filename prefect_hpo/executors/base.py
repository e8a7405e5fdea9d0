"""The executor interface: start trials, hear when they end, stop them.

An executor is the running side of one sweep's trials (`LocalTrials`, `WorkPoolTrials`, `ClusterTrials`);
where they run is said by settings (`prefect_hpo.executors.settings`). Executors are context managers:
leaving the `with` block closes what they hold (worker processes)."""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from prefect_hpo.records import TrialRecord
from prefect_hpo.trial import TrialSpec


@dataclass(eq=False)
class TrialHandle:
    """A trial an executor has started; `final` is set once its end is committed to the store."""

    record: TrialRecord
    spec: TrialSpec
    started: float
    final: TrialRecord | None = None
    error: BaseException | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Executor(Protocol):
    """Runs trials. Each trial's final state is committed to the store before `wait_any` returns it."""

    def submit(self, record: TrialRecord, spec: TrialSpec) -> TrialHandle: ...

    def wait_any(self, handles: Sequence[TrialHandle], timeout: float | None) -> list[TrialHandle]:
        """Handles that ended (at least one, unless `timeout` passed first)."""
        ...

    def cancel(self, handle: TrialHandle, reason: str) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class AdoptingExecutor(Executor, Protocol):
    """An executor whose trials outlive the parent that launched them (flow runs on a work pool).

    A resumed sweep hands it the trials its dead parent left RUNNING, to watch again; with any other
    executor such a trial died with its parent and is recorded INTERRUPTED, to run again."""

    def adopt(self, record: TrialRecord, spec: TrialSpec) -> TrialHandle:
        """Watch the running attempt `record` again, without starting it a second time."""
        ...


class ClosedOnExit:
    """`with` support for an executor: the block's end calls `close()`, however the block ended."""

    def close(self) -> None:
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class EndedJob(Protocol):
    """What an executor's per-trial job leaves behind when its task ends."""

    final: TrialRecord | None
    error: BaseException | None


class _Future(Protocol):
    def add_done_callback(self, fn: Callable[[Any], None]) -> None: ...


class EndedTrials:
    """Handles of ended trials, in the order they ended; done-callbacks put, the loop waits."""

    def __init__(self) -> None:
        self._ended: queue.Queue[TrialHandle] = queue.Queue()

    def watch(self, handle: TrialHandle, future: _Future, job: EndedJob) -> None:
        """Queue `handle` with the job's final record (or error) once the task behind `future` ends."""

        def ended(_: object) -> None:
            handle.final, handle.error = job.final, job.error
            self._ended.put(handle)

        future.add_done_callback(ended)

    def put(self, handle: TrialHandle) -> None:
        """Queue `handle`, whose `final` (or `error`) is set: a trial whose end was heard without a task."""
        self._ended.put(handle)

    def wait_any(self, timeout: float | None) -> list[TrialHandle]:
        """Every handle that ended so far (waiting up to `timeout` for the first)."""
        try:
            ended = [self._ended.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                ended.append(self._ended.get_nowait())
            except queue.Empty:
                return ended
