"""The temporary Prefect server that a sweep starts when no Prefect server is configured: its settings,
and a start that a Ctrl-C does not stop.

With no `PREFECT_API_URL`, the first flow of a process starts a local server of its own
(SQLite under `PREFECT_HOME`) that lives as long as the process. Two of its defaults
make a normal sweep print errors:

- its telemetry service posts to prefect.io: offline it logs
  `ERROR prefect.server.services.telemetry - Failed to send telemetry` on every run, and
  on a first run (a fresh `PREFECT_HOME`) its write of the telemetry session races the
  database's creation and prints a 60-line `database is locked` traceback;
- it must answer within 20 s, but creating its database on a first run took 10-15 s
  quiet and over 20 s on a busy machine ("Timed out while attempting to connect to
  ephemeral Prefect API server").

A setting the user gave (environment or Prefect profile) is kept; a configured server
(`PREFECT_API_URL`) is left alone.

Prefect starts that server as a child process in the caller's process group. A terminal's Ctrl-C goes to
that whole group, so the server died with the first Ctrl-C while the sweep still had to record its
interrupted trials and end its flow run Cancelled (it then crawled on with reconnect warnings). We start
that same server ourselves, before the sweep's flow, in a process group of its own; Prefect finds it running
and uses it, and stops it at exit as usual. Out of the group, a `kill -9` of the group would no longer reach
it, so on Linux it also asks the kernel to end it when the thread that started it (the main thread) dies.

Prefect has no option for this, so `_command` mirrors `SubprocessASGIServer._run_uvicorn_command` of
the Prefect version we pin (3.9), adding only the process group and the parent-death signal. Only the
main thread does this (it owns Ctrl-C, and a parent-death signal follows the starting thread); a sweep
started elsewhere lets Prefect start its server as usual.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import prefect
from prefect.context import FlowRunContext, TaskRunContext
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    get_current_settings,
    temporary_settings,
)

from prefect_hpo.errors import ServerStartError

if TYPE_CHECKING:  # the module imports Prefect's whole server (1-2 s); Prefect imports it only when needed too
    from prefect.server.api.server import SubprocessASGIServer

#: Seconds the temporary server may take to answer: room for a first run's database creation on a busy machine.
STARTUP_TIMEOUT_S = 120


@contextmanager
def temporary_server_settings() -> Iterator[None]:
    """Within this block, a temporary server that starts sends no telemetry and may take longer to start."""
    settings = get_current_settings()
    updates: dict[Any, Any] = {}
    if settings.api.url is None:
        if "analytics_enabled" not in settings.server.model_fields_set:
            updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
        if "startup_timeout_seconds" not in settings.server.ephemeral.model_fields_set:
            updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = STARTUP_TIMEOUT_S
    if not updates:
        yield
        return
    with temporary_settings(updates=updates):
        yield


def _uses_temporary_server() -> bool:
    settings = get_current_settings()
    # not with a long-running server (`prefect server start`, Prefect Cloud), nor inside a run, whose
    # server is up already; otherwise Prefect's get_client starts the temporary server
    return (
        not settings.api.url
        and FlowRunContext.get() is None
        and TaskRunContext.get() is None
        and threading.current_thread() is threading.main_thread()
    )


def _end_with_parent() -> Callable[[], None] | None:
    """A pre-exec function that makes the child receive SIGTERM when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child must only call it
    pr_set_pdeathsig = 1

    def end_with_parent() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return end_with_parent


def _command(server: SubprocessASGIServer) -> subprocess.Popen[Any]:
    env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }
    args = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent)]
    args += ["--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(server.port)]
    args += ["--log-level", "error", "--lifespan", "on"]
    return subprocess.Popen(args, env=env, process_group=0, preexec_fn=_end_with_parent())


def start_temporary_server() -> bool:
    """Start Prefect's temporary server in a process group of its own, if this sweep will use one; True when
    it does (started now or by an earlier sweep of this process)."""
    if not _uses_temporary_server():
        return False
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    if server.running:
        return True
    server._run_uvicorn_command = lambda: _command(server)  # type: ignore[method-assign]
    try:
        server.start()
    except RuntimeError as exc:
        if "Timed out" not in str(exc):
            raise
        seconds = get_current_settings().server.ephemeral.startup_timeout_seconds
        raise ServerStartError(
            f"Prefect's temporary server did not answer within {seconds:g} s (a busy machine?): give it longer "
            f"with PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or start one server for good "
            f"(`prefect server start`) and point PREFECT_API_URL at it"
        ) from None
    return True


def shared_with_cluster_workers() -> contextlib.AbstractContextManager[Any]:
    """Prefect settings that point a cluster's workers at this process's temporary server.

    A Dask or Ray worker runs each trial's task run with the sweep's Prefect settings, in which a temporary
    server has no URL: each worker process then started a temporary server of its own (one more uvicorn per
    worker, on the same database), and a worker that died with its trial left its server running, orphaned.
    With the URL in the settings they use the sweep's."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer._instances.get(None)
    if server is None or not server.running:
        return contextlib.nullcontext()
    return temporary_settings({PREFECT_API_URL: server.api_url})


def without_heartbeats() -> contextlib.AbstractContextManager[Any]:
    """Prefect settings under which a flow run sends no heartbeats: for a flow on the temporary server.

    A synchronous flow run's end waits for its heartbeat thread, which sleeps in 1 s steps: 1.1 s per flow
    run here, against 0.1-0.2 s without heartbeats. Heartbeats let a server mark a flow run whose process
    died; the temporary server dies with that process, so on it they can never tell anyone anything."""
    return temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def stop_temporary_server() -> None:
    """Stop the temporary server at once (a second Ctrl-C: the process exits without its atexit hooks)."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer._instances.get(None)
    if server is not None and server.server_process is not None:
        server.server_process.kill()
