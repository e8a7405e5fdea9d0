"""Where a training function really runs on this machine: a thread, or a worker process.

Both give the same two-call handle (`result(timeout)`, `kill()`), so the Prefect
task that wraps a trial does not care which one it has.

Processes come from a pebble `ProcessPool`, not `concurrent.futures`: a trial past
its time limit, or one the sweep cancels, must be killed alone, and pebble kills
and replaces just that worker where the standard pool would break as a whole.
Workers are not forked from the parent (it runs Prefect's threads and event loop,
which a fork would copy half-way) but from a fork server (`worker_context`); they
receive the training function once, cloudpickled, and open their own connection
to the trial store.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import multiprocessing
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol

import cloudpickle
import pebble

from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.records import Outcome
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.trial import ReportSink, TrainFn, TrialSpec, run_training


class TrialKilled(PrefectHPOError):
    """The trial's thread or process was stopped from outside before it finished."""


class TrialDied(PrefectHPOError):
    """The process running the trial died (a crash, a signal, os._exit)."""


class Running(Protocol):
    """One trial in progress."""

    def result(self) -> Outcome:
        """The outcome; TimeoutError past the time limit, TrialKilled / TrialDied otherwise."""
        ...

    def kill(self) -> None: ...


class Runner(Protocol):
    def start(self, spec: TrialSpec, time_limit: float | None) -> Running:
        """Start a trial; its time limit counts from when its own code starts, not from queueing."""
        ...

    def close(self) -> None: ...


# ---- threads -------------------------------------------------------------------------


class _ThreadRunning:
    def __init__(self, target: Callable[[], Outcome], time_limit: float | None) -> None:
        self._time_limit = time_limit
        self._done = threading.Event()
        self._outcome: Outcome | None = None
        self._killed = False
        self._thread = threading.Thread(target=self._run, args=(target,), daemon=True)
        self._thread.start()

    def _run(self, target: Callable[[], Outcome]) -> None:
        self._outcome = target()
        self._done.set()

    def result(self) -> Outcome:
        if not self._done.wait(self._time_limit):
            raise TimeoutError
        if self._killed or self._outcome is None:
            raise TrialKilled("trial thread was abandoned")
        return self._outcome

    def kill(self) -> None:
        # A Python thread cannot be killed: the stop request in the store ends it at its
        # next report; here we only stop waiting for it.
        self._killed = True
        self._done.set()


class ThreadRunner:
    """Runs each trial in a daemon thread of this process (I/O-bound or GIL-releasing work)."""

    def __init__(self, train: TrainFn, sink: ReportSink) -> None:
        self._train = train
        self._sink = sink

    def start(self, spec: TrialSpec, time_limit: float | None) -> Running:
        return _ThreadRunning(lambda: run_training(self._train, spec, self._sink), time_limit)

    def close(self) -> None:
        return None


# ---- processes -----------------------------------------------------------------------

# State of one worker process: its training function and its store connection.
# Set once by `_init_worker` in each spawned worker; never used in the parent.
_WORKER: dict[str, Any] = {}


def _init_worker(train_bytes: bytes, storage_url: str) -> None:
    _WORKER["train"] = cloudpickle.loads(train_bytes)
    _WORKER["store"] = SqlTrialStore(storage_url)


def _run_in_worker(spec: TrialSpec) -> Outcome:
    return run_training(_WORKER["train"], spec, _WORKER["store"])


def worker_context(train_module: str | None = None) -> multiprocessing.context.BaseContext:
    """Worker (and plot helper) processes fork from a fork server: a fresh, single-threaded process, so
    forking it is safe, unlike forking the parent with its threads. The fork server imports the user's
    main module once (where it has a file: a script), the module of the training function and
    prefect_hpo's trial runtime (which needs neither Prefect nor Optuna); forked workers inherit them.
    A spawned worker imported all of that itself, about a second of CPU each (with 8 slots on 2 cores
    the first trials waited 10 s, against under 3 s from the fork server); preloading prefect_hpo's
    whole API instead (Prefect included) held the first trivial trial back 3 s, against 1 s now.

    The fork server starts once per parent process, with the modules named when it starts: a later
    sweep in the same process whose training function lives elsewhere has its workers import that
    module themselves. Only a call that names `train_module` sets the list, so that a plot helper
    started first does not shorten it. Where there is no fork server (Windows), workers are spawned."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    if train_module is not None:
        preload = ["__main__", "prefect_hpo.executors.runners"]
        if train_module != "__main__" and train_module in sys.modules:
            preload.append(train_module)
        context.set_forkserver_preload(preload)
    return context


class _ProcessRunning:
    def __init__(self, future: pebble.ProcessFuture[Outcome]) -> None:
        self._future = future

    def result(self) -> Outcome:
        try:
            return self._future.result()
        except concurrent.futures.TimeoutError:  # pebble's per-task limit: the worker was killed
            raise TimeoutError from None
        except concurrent.futures.CancelledError:
            raise TrialKilled("trial process was killed") from None
        except pebble.ProcessExpired as exc:
            raise TrialDied(f"the worker process died with exit code {exc.exitcode}") from None
        except concurrent.futures.process.BrokenProcessPool as exc:
            raise TrialDied(
                f"the worker pool broke ({exc or 'a worker failed to start'}); if the training function "
                "lives in a script, guard the sweep with `if __name__ == '__main__':`"
            ) from None

    def kill(self) -> None:
        self._future.cancel()  # type: ignore[no-untyped-call]


class ProcessRunner:
    """Runs each trial in one of `size` worker processes: true parallelism for CPU-bound work."""

    def __init__(self, train: TrainFn, storage_url: str, size: int) -> None:
        try:
            payload = cloudpickle.dumps(train)
        except Exception as exc:  # noqa: BLE001 - pickling raises many types; all mean the same here
            raise PrefectHPOError(
                f"the training function cannot be sent to worker processes ({exc}); "
                "use executor='threads', or keep unpicklable objects out of its closure"
            ) from None
        self._pool = pebble.ProcessPool(
            max_workers=size,
            initializer=_init_worker,
            initargs=(payload, storage_url),
            context=worker_context(getattr(train, "__module__", None) or "__main__"),
        )

    def start(self, spec: TrialSpec, time_limit: float | None) -> Running:
        return _ProcessRunning(self._pool.schedule(_run_in_worker, args=(spec,), timeout=time_limit))

    def close(self) -> None:
        self._pool.stop()  # type: ignore[no-untyped-call]
        self._pool.join(timeout=10)
