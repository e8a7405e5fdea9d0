"""Ctrl-C and SIGTERM during a sweep: the first stops the sweep cleanly, the second exits at once.

A person presses Ctrl-C; a scheduler, a container stop or Prefect's cancel sends SIGTERM. Either way the
first signal only raises a flag: the loop sees it within a fraction of a second, stops starting trials,
ends the running ones as INTERRUPTED (the next run of the same sweep runs them again), and the sweep's
flow run ends Cancelled. Nothing is raised into whatever the main thread happens to be doing, so no store
transaction or Prefect call is cut in half. A second signal means "now": the `hard_stops` registered by
the sweep's parts (killing worker processes, stopping Prefect's temporary server) run, and the process
exits with 128 + the signal's number, as a shell reports a process killed by it.

Signal handlers belong to the main thread: a sweep started from another thread installs none and keeps
the process's own handling.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, TypeVar

BaseExceptionT = TypeVar("BaseExceptionT", bound=BaseException)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_NAMES: dict[int, str] = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


def sweep_interrupted(message: str) -> KeyboardInterrupt:
    """What `sweep()` raises after a Ctrl-C or SIGTERM: a KeyboardInterrupt carrying the line that says how to
    continue. Exactly a KeyboardInterrupt, not a subclass: code that handles Ctrl-C (a notebook, a pipeline)
    handles it, and a script that leaves it uncaught exits as after any Ctrl-C (status 130), a subclass
    would exit 1. Marked, so that `print_interrupt_once` prints its line instead of a traceback."""
    return quiet(KeyboardInterrupt(message))


_MARK = "(prefect_hpo: its message says it all)"


def quiet(error: BaseExceptionT) -> BaseExceptionT:
    """Mark an error whose message says what happened and what to do: left uncaught, `print_interrupt_once`
    prints that message rather than a traceback through prefect_hpo's and Prefect's frames."""
    if _MARK not in getattr(error, "__notes__", ()):
        error.add_note(_MARK)
    return error


class Interrupts:
    """Turns SIGINT/SIGTERM into a flag while a sweep runs (a context manager; restores the old handlers)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._hard_stops: list[Callable[[], None]] = []
        self._previous: dict[int, Any] = {}
        self._installed = False

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            self._installed = True
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._installed:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)
            self._installed = False

    def signal_name(self) -> str | None:
        """What interrupted the sweep ("Ctrl-C (SIGINT)"), or None while nothing has."""
        return None if self.signal is None else _NAMES.get(self.signal, f"signal {self.signal}")

    def add_hard_stop(self, stop: Callable[[], None]) -> None:
        """Something to end at once if a second signal comes (a worker pool, a server process)."""
        self._hard_stops.append(stop)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = _NAMES.get(signum, f"signal {signum}")
        if self.signal is None:
            self.signal = signum
            # os.write, not print: a handler may run while the main thread is inside a print of its own
            os.write(2, f"\n{name}: stopping the sweep (again to stop at once)\n".encode())
            return
        for stop in reversed(self._hard_stops):
            with contextlib.suppress(Exception):
                stop()
        os.write(2, f"{name} again: stopped at once\n".encode())
        os._exit(128 + signum)


def print_interrupt_once(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """sys.excepthook for a `quiet` error nobody caught: its message, not a traceback (an interrupt's message
    alone, another error's with its class: `TrialsFailAlike: sweep 'x' stopped early: ...`)."""
    if _MARK in getattr(exc, "__notes__", ()):
        sys.stderr.write(f"{exc}\n" if isinstance(exc, KeyboardInterrupt) else f"{exc_type.__name__}: {exc}\n")
        return
    _previous_hook(exc_type, exc, tb)


_previous_hook = sys.excepthook


def install_quiet_hook() -> None:
    """Let an uncaught `sweep_interrupted` print one line (Python still exits as after a Ctrl-C, status 130)."""
    global _previous_hook
    if sys.excepthook is not print_interrupt_once:
        _previous_hook = sys.excepthook
        sys.excepthook = print_interrupt_once
