"""What every helper process of a sweep (the fork server, trial workers, the plot helper) does first."""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading
import time

#: Set (to the sweep's pid) only while the sweep's main thread spawns the fork server: the fork server then
#: asks the kernel to kill it when that thread ends (`fork_server_dies_with_parent`).
FORK_SERVER_PARENT_VARIABLE = "PREFECT_HPO_FORK_SERVER_PARENT"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def follow_parent(parent_pid: int) -> None:
    """Make a helper process of the sweep (a trial worker, the plot helper) leave with the sweep's process.

    It ignores Ctrl-C: a terminal sends SIGINT to the whole process group, and it is the sweep's process
    that decides what a Ctrl-C ends (it stops the trials and records them INTERRUPTED). And it exits when
    that process dies (a second Ctrl-C exits at once; a kill -9), so no trial runs on for nobody.

    Forked by the fork server (its parent is not the sweep's process), it asks the kernel for SIGKILL when
    the fork server ends, which dies with the sweep's process in turn (`fork_server_dies_with_parent`): a
    kill that needs nothing of this process, however busy its own code keeps it. Once, with the thread
    below alone, three workers were still alive 3 s after their parent's kill -9 (on a loaded machine).
    That thread stays as the way out where the kernel's cannot be had: a spawned worker (whose parent's
    spawning thread may end before the sweep), no Linux, or a fork server started outside the main thread.
    The process to watch is named by its pid: helpers are forked by the fork server, so multiprocessing's
    own parent sentinel watches the fork server."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.getppid() != parent_pid:
        die_with_parent()
    threading.Thread(target=_exit_with, args=(parent_pid,), daemon=True, name="hpo-parent-watch").start()


def fork_server_dies_with_parent() -> None:
    """In the fork server, first thing: be killed by the kernel when the sweep's process dies.

    Only where the sweep's main thread spawned it (the variable says so): the kernel's signal follows the
    thread that spawned a process, not the process, and a fork server that a short-lived thread started
    would die with that thread. Elsewhere multiprocessing's own way stays: the fork server leaves once it
    reads the end of its parent's pipe, which it does only between imports (seconds, at its start)."""
    parent = os.environ.pop(FORK_SERVER_PARENT_VARIABLE, None)
    if parent is not None and parent == str(os.getppid()):
        die_with_parent()


def die_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when its parent (the thread that forked it) ends; Linux only.

    False where it cannot. A parent that ended before the request leaves this process with another parent
    (init or a subreaper): then it exits now, as the signal would have made it."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:
        os._exit(0)
    return True


def _exit_with(pid: int) -> None:
    try:
        handle = os.pidfd_open(pid)  # Linux: readable once the process has ended, whatever reuses its pid
    except (AttributeError, OSError):
        handle = None
    if handle is not None:
        select.select([handle], [], [])
    else:
        while _alive(pid):
            time.sleep(0.5)
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
