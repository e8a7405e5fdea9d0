"""Where a training function really runs on this machine: a thread, or a worker process.

Both give the same two-call handle (`result(timeout)`, `kill()`), so the Prefect
task that wraps a trial does not care which one it has.

Processes come from a pebble `ProcessPool`, not `concurrent.futures`: a trial past
its time limit, or one the sweep cancels, must be killed alone, and pebble kills
and replaces just that worker where the standard pool would break as a whole.
Workers are not forked from the parent (it runs Prefect's threads and event loop,
which a fork would copy half-way) but from a fork server (`worker_context`); they
receive the training function once (by value, or by name in the user's script:
`training_payload`), and open their own connection to the trial store.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, Protocol

import pebble

from prefect_hpo.errors import PrefectHPOError, StoreError
from prefect_hpo.executors.main_script import handed_to_fork_server
from prefect_hpo.executors.training_payload import pack, unpack
from prefect_hpo.helpers import FORK_SERVER_PARENT_VARIABLE, follow_parent
from prefect_hpo.records import Outcome, TrialRecord, TrialState
from prefect_hpo.resources import apply_placement
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.training import not_an_exit, run_training
from prefect_hpo.trial import ReportSink, TrainFn, TrialSpec


class TrialKilled(PrefectHPOError):
    """The trial's thread or process was stopped from outside before it finished."""


class TrialDied(PrefectHPOError):
    """The process running the trial died (a crash, a signal, os._exit)."""


class Running(Protocol):
    """One trial in progress."""

    def result(self) -> Outcome | TrialRecord:
        """The outcome, or the trial as stored where the runner recorded the outcome itself (a worker
        process does); TimeoutError past the time limit, TrialKilled / TrialDied otherwise."""
        ...

    def kill(self) -> None: ...


class Runner(Protocol):
    def start(self, spec: TrialSpec, time_limit: float | None, task_run_id: str | None = None) -> Running:
        """Start a trial; its time limit counts from when its own code starts, not from queueing.
        `task_run_id`: the Prefect task run that waits for it, recorded with its end."""
        ...

    def close(self) -> None: ...


def escaped(exc: BaseException) -> Outcome:
    """The trial's FAIL for what got past `run_training` (which turns every Exception, sys.exit() and a
    KeyboardInterrupt of the training function's into an Outcome): a BaseException of its own (a
    framework's cancel, GeneratorExit). It ends that trial only, never the sweep or a slot's wait."""
    error = "".join(traceback.format_exception(exc)) + not_an_exit(exc)
    return Outcome(state=TrialState.FAIL, error=error)


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
        try:
            self._outcome = target()
        except BaseException as exc:  # noqa: BLE001 - a thread that died of it left its trial waiting forever
            self._outcome = escaped(exc)
        finally:
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

    def start(self, spec: TrialSpec, time_limit: float | None, task_run_id: str | None = None) -> Running:
        return _ThreadRunning(lambda: run_training(self._train, spec, self._sink), time_limit)

    def close(self) -> None:
        return None


# ---- processes -----------------------------------------------------------------------

# State of one worker process: its training function and its store connection.
# Set once by `_init_worker` in each spawned worker; never used in the parent.
_WORKER: dict[str, Any] = {}


def _init_worker(train_bytes: bytes, storage_url: str, parent_pid: int) -> None:
    follow_parent(parent_pid)
    _WORKER["train"] = unpack(train_bytes)
    _WORKER["url"] = storage_url
    # A store that cannot be opened now (deleted, unreachable) is tried again by the first trial, whose
    # failure says why: raised here, pebble printed a traceback per worker it started, beside the sweep's
    # own one-line StoreError.
    with contextlib.suppress(StoreError):
        _worker_store()


def _worker_store() -> SqlTrialStore:
    store: SqlTrialStore | None = _WORKER.get("store")
    if store is None:
        store = _WORKER["store"] = SqlTrialStore(_WORKER["url"], create=False)  # the sweep made it: gone = deleted
    return store


def _run_in_worker(spec: TrialSpec, task_run_id: str | None) -> Outcome | TrialRecord:
    """Run the trial and record its end from here, not only through the parent: a result stored by the
    worker is kept when the sweep's parent dies before it hears of it (the next run finds the trial ended,
    not RUNNING, and does not run it again). Where the store does not take the record, the parent tries.
    A store this worker cannot open makes the trial recoverable: it runs again, if the sweep goes on."""
    try:
        store = _worker_store()
    except StoreError as exc:
        return Outcome(state=TrialState.FAIL_RECOVERABLE, error=f"StoreError: {exc}")
    apply_placement(spec.devices, spec.cpu_threads)  # before the training code: its GPUs, its thread count
    outcome = run_training(_WORKER["train"], spec, store)
    try:
        return store.end_attempt(spec.trial_id, spec.attempt, outcome, task_run_id=task_run_id)
    except StoreError:
        return outcome


def worker_context(train_module: str | None = None) -> multiprocessing.context.BaseContext:
    """Worker (and plot helper) processes fork from a fork server: a fresh, single-threaded process, so
    forking it is safe, unlike forking the parent with its threads. The fork server imports the user's
    main module once (where it has a file: a script; up to its sweep, see `main_script`), the module of the
    training function and prefect_hpo's trial runtime (which needs neither Prefect nor Optuna); forked
    workers inherit them and do not run the script again.
    A spawned worker imported all of that itself, about a second of CPU each (with 8 slots on 2 cores
    the first trials waited 10 s, against under 3 s from the fork server); preloading prefect_hpo's
    whole API instead (Prefect included) held the first trivial trial back 3 s, against 1 s now.

    The fork server starts once per parent process, with the modules named when it starts: a later
    sweep in the same process whose training function lives elsewhere has its workers import that
    module themselves. Where there is no fork server (Windows), workers are spawned (and run the script)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # The script first: it sets the parent's sys.path, from which the training function's module imports.
    # Not "__main__": that name makes multiprocessing run the script, sweep and all (where it works at all).
    preload = ["prefect_hpo.executors.main_preload", "prefect_hpo.executors.runners"]
    if train_module is not None and train_module != "__main__" and train_module in sys.modules:
        preload.append(train_module)
    context.set_forkserver_preload(preload)
    _start_fork_server()
    return context


def _start_fork_server() -> None:
    """Start the fork server now (if it is not running), deaf to Ctrl-C.

    A terminal's Ctrl-C reaches every process of its group; one that came while the fork server imported
    its modules killed it (it ignores SIGINT only after its imports), and every worker start after it
    failed. Started while SIGINT is ignored, it keeps ignoring it (an ignored signal stays ignored across
    exec); the workers it forks leave a Ctrl-C to the parent, which ends their trials INTERRUPTED. A Ctrl-C
    in the few milliseconds of the spawn itself is lost; in a thread other than the main one (which owns
    signal handlers) the server starts as multiprocessing starts it.

    Started from the main thread, it is also told to die with this process (`fork_server_dies_with_parent`:
    the kernel kills it, and so the workers it forked, when this process is killed), rather than when it
    next reads its parent's pipe, which at its start, busy importing, took seconds."""
    with handed_to_fork_server():
        if threading.current_thread() is not threading.main_thread():
            multiprocessing.forkserver.ensure_running()
            return
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.environ[FORK_SERVER_PARENT_VARIABLE] = str(os.getpid())
        try:
            multiprocessing.forkserver.ensure_running()
        finally:
            os.environ.pop(FORK_SERVER_PARENT_VARIABLE, None)
            signal.signal(signal.SIGINT, previous)


class _ProcessRunning:
    def __init__(self, future: pebble.ProcessFuture[Outcome | TrialRecord]) -> None:
        self._future = future

    def result(self) -> Outcome | TrialRecord:
        try:
            return self._future.result()
        except concurrent.futures.TimeoutError:  # pebble's per-task limit: the worker was killed
            raise TimeoutError from None
        except concurrent.futures.CancelledError:
            raise TrialKilled("trial process was killed") from None
        except pebble.ProcessExpired as exc:
            raise TrialDied(f"the worker process died with exit code {exc.exitcode}") from None
        except concurrent.futures.process.BrokenProcessPool as exc:
            raise TrialDied(f"the worker pool broke ({exc or 'a worker failed to start'})") from None
        except BaseException as exc:  # noqa: BLE001 - the worker's, sent back: raised here, it ended the sweep
            return escaped(exc)

    def kill(self) -> None:
        self._future.cancel()  # type: ignore[no-untyped-call]


class ProcessRunner:
    """Runs each trial in one of `size` worker processes: true parallelism for CPU-bound work.

    `fresh`: each trial gets a process of its own (forked from the fork server for it, gone after it), where
    trials hold GPUs: CUDA reads CUDA_VISIBLE_DEVICES once per process, and a process ending is what frees
    its GPU memory for sure. Otherwise workers run one trial after another (a fork per trial costs ~10 ms)."""

    def __init__(self, train: TrainFn, storage_url: str, size: int, *, fresh: bool = False) -> None:
        payload = pack(train)
        self.fresh = fresh
        self._pool = pebble.ProcessPool(
            max_workers=size,
            max_tasks=1 if fresh else 0,
            initializer=_init_worker,
            initargs=(payload, storage_url, os.getpid()),
            context=worker_context(getattr(train, "__module__", None) or "__main__"),
        )
        self._starting: threading.Thread | None = None
        self._unfinished: set[concurrent.futures.Future[Outcome | TrialRecord]] = set()
        self._lock = threading.Lock()

    def start(self, spec: TrialSpec, time_limit: float | None, task_run_id: str | None = None) -> Running:
        future = self._pool.schedule(_run_in_worker, args=(spec, task_run_id), timeout=time_limit)
        with self._lock:
            self._unfinished.add(future)
        future.add_done_callback(self._finished)
        return _ProcessRunning(future)

    def _finished(self, future: concurrent.futures.Future[Outcome | TrialRecord]) -> None:
        with self._lock:
            self._unfinished.discard(future)

    def start_workers(self) -> None:
        """Start the worker processes now, in the background, rather than with the first trial: forking them
        waits for the fork server's imports, which can then overlap the sweep's own start (`head_start`)."""
        self._starting = threading.Thread(target=lambda: self._pool.active, daemon=True, name="hpo-workers-start")
        self._starting.start()

    def close(self) -> None:
        if self._starting is not None:
            self._starting.join()  # a pool stopped while it still starts workers would leave them running
        # A trial still running when the sweep ends without stopping it (its loop failed: a store that went
        # away): pebble's stop() kills its worker but never settles its future, and the thread waiting on
        # it (the trial's Prefect task, which the flow waits for) would wait forever. Cancelled, it ends.
        with self._lock:
            unfinished = list(self._unfinished)
        for future in unfinished:
            future.cancel()  # pebble keeps a started task's future pending: cancel() works, and kills it
        self._pool.stop()  # type: ignore[no-untyped-call]
        self._pool.join(timeout=10)
