"""Finding processes by a marker in their environment: what a test (or the suite) started and left running."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import psutil


def carrying(variable: str, value: str) -> list[psutil.Process]:
    """Live processes, other than this one, whose environment has `variable=value`."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(variable) == value and proc.status() != "zombie":
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def left_behind(
    variable: str, value: str, within: float, which: Callable[[psutil.Process], bool] = lambda proc: True
) -> list[psutil.Process]:
    """The processes carrying the marker (those of them `which` picks) that are still alive after `within`
    seconds (none: returns at once)."""
    deadline = time.monotonic() + within
    while True:
        alive = [proc for proc in carrying(variable, value) if _picked(which, proc)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def group_left(group: int, within: float = 60.0) -> list[str]:
    """The command lines of what still runs in process group `group` after up to `within` seconds
    (none: returns as soon as the group is empty)."""
    deadline = time.monotonic() + within
    while True:
        left = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if os.getpgid(proc.pid) == group:
                    left.append(" ".join(proc.info["cmdline"] or [])[:120])
            except (ProcessLookupError, psutil.Error):
                continue
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _picked(which: Callable[[psutil.Process], bool], proc: psutil.Process) -> bool:
    try:
        return which(proc)
    except psutil.Error:  # gone meanwhile
        return False
