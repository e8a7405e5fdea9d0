"""A local sweep's helper processes, started before Prefect creates the sweep's flow run.

A sweep on this machine needs a fork server (it imports the user's script and prefect_hpo's trial runtime),
one worker process per slot and the plot helper (matplotlib, Optuna's plotting). Started inside the flow,
they came up only after Prefect had started its temporary server and created the flow run, and the first
trials, recorded RUNNING, waited for their workers: 4.9 s with 1 slot, 6.4 s with 2, 8.7 s with 4, for
trials that sleep 2 s (`benchmarks/startup.py`). `sweep()` starts them first (`HeadStart`), so that their
start overlaps Prefect's (its server, the flow run), and the flow takes them over (`take_runner`,
`take_drawer`). What the flow does not take (it failed before building its executor, or it runs its trials
elsewhere) is stopped when `sweep()` returns.

The fork server itself serves every sweep of the process and is stopped when the process exits
(`_end_fork_server`): left to itself it noticed its parent's exit only afterwards and then ran a whole
interpreter shutdown, with Prefect and the user's script loaded (0.6 s here), still in the script's
process group.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing.forkserver
import os
import signal
import threading
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Protocol, cast

from prefect_hpo.executors.runners import ProcessRunner
from prefect_hpo.reporting.plots_artifact import PlotHelper, start_drawer
from prefect_hpo.trial import TrainFn

_CURRENT: ContextVar[HeadStart | None] = ContextVar("prefect_hpo_head_start", default=None)
_AT_EXIT = threading.Lock()
_at_exit_registered: list[bool] = []


class _ForkServerInternals(Protocol):
    """What `_end_fork_server` uses of multiprocessing's fork server handle (CPython 3.9 to 3.13)."""

    _forkserver_pid: int | None

    def _stop(self) -> None: ...


def _end_fork_server() -> None:
    """At exit: stop the fork server now, without its interpreter shutdown (it has no state to save: the
    workers it forked are stopped by then). multiprocessing has no public call for this; `_stop` is the one
    its own tests use, and it reaps the process (or, should SIGTERM be ignored, asks it to leave)."""
    server = cast(_ForkServerInternals, multiprocessing.forkserver._forkserver)
    if server._forkserver_pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(server._forkserver_pid, signal.SIGTERM)
    server._stop()


def _end_fork_server_at_exit() -> None:
    with _AT_EXIT:
        if not _at_exit_registered:
            atexit.register(_end_fork_server)
            _at_exit_registered.append(True)


class HeadStart:
    """Within the `with` block (around the sweep's flow): the worker pool and the plot helper, starting.

    `slots` worker processes start for `train` when `workers` is "processes" (and the trials run on this
    machine); the plot helper starts when `plots`. Both start from the one fork server, in the background:
    entering returns at once."""

    def __init__(
        self, train: TrainFn, storage_url: str, slots: int, *, processes: bool, plots: bool, fresh: bool = False
    ) -> None:
        self._train, self._storage_url, self._slots, self._fresh = train, storage_url, slots, fresh
        self._start_processes, self._start_plots = processes, plots
        self._runner: ProcessRunner | None = None
        self._drawer: PlotHelper | None = None
        self._token: Token[HeadStart | None] | None = None

    def __enter__(self) -> HeadStart:
        _end_fork_server_at_exit()
        if self._start_processes:
            self._runner = ProcessRunner(self._train, self._storage_url, self._slots, fresh=self._fresh)
            self._runner.start_workers()
        if self._start_plots:
            self._drawer = start_drawer()
        self._token = _CURRENT.set(self)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
        runner, self._runner = self._runner, None
        drawer, self._drawer = self._drawer, None
        if runner is not None:
            runner.close()
        if drawer is not None:
            drawer.stop()

    def take_runner(self, train: TrainFn, storage_url: str, slots: int, fresh: bool = False) -> ProcessRunner | None:
        """The started worker pool, if it was started for these settings; the caller then owns (closes) it."""
        wanted = (train, storage_url, slots, fresh)
        if self._runner is None or wanted != (self._train, self._storage_url, self._slots, self._fresh):
            return None
        runner, self._runner = self._runner, None
        return runner

    def take_drawer(self) -> PlotHelper | None:
        """The started plot helper, if any; the caller then owns (shuts down) it."""
        drawer, self._drawer = self._drawer, None
        return drawer


def current_head_start() -> HeadStart | None:
    """The head start of the `sweep()` call this flow runs in (None: the flow was started another way)."""
    return _CURRENT.get()
