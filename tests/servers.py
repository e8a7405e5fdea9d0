"""Real Prefect servers for tests: started as processes, awaited on their health check, stopped by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not exit within 20 s; a process started in a session of its own
    (`start_new_session=True`, as the servers here are) is stopped with its whole process group, so that
    what it started (`prefect server start` runs its API server as a child) ends with it."""
    group = _own_group(proc)
    _signal(proc, group, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        _signal(proc, group, signal.SIGKILL)
        proc.wait(timeout=10)
    if group is not None:  # the children, if the leader left before them
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def _own_group(proc: subprocess.Popen[bytes]) -> int | None:
    try:
        return proc.pid if os.getpgid(proc.pid) == proc.pid else None
    except ProcessLookupError:
        return None


def _signal(proc: subprocess.Popen[bytes], group: int | None, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group is not None:
            os.killpg(group, signum)
        else:
            proc.send_signal(signum)


@contextmanager
def start_prefect_server(
    home: Path, env: Mapping[str, str] = {}, ui: bool = False, port: int | None = None
) -> Iterator[str]:
    """`prefect server start` on a free loopback port (or `port`: a server started again where it was) with its
    own home; yields its API URL once healthy."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/api"
    full = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    full.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED=str(ui).lower())
    full.update(PREFECT_UI_API_URL=url)  # the browser's way back to this server's API
    full.update(env)
    log_path = home / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=full,
            stdout=log,
            stderr=log,
            start_new_session=True,  # stopped with its process group (`stop`)
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"prefect server exited: {log_path.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("prefect server did not answer its health check within 120 s")
                time.sleep(0.2)
            yield url
        finally:
            flush_to_server()
            stop(proc)


def flush_to_server(timeout: float = 60.0) -> None:
    """Send the logs and events this process still queues, while their server can take them.

    Prefect ships flow-run logs and events from background services that drain at interpreter exit;
    if their server is gone by then, each queued item waits out its retries and the exit takes many
    minutes. Draining them before a test server stops keeps the test process's exit prompt.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout, at_exit=False)
    EventsWorker.drain_all(timeout=timeout, at_exit=False)


def wait_final(client: Any, run_id: Any, within: float = 120) -> Any:
    """The flow run once it has reached a final state (polling the server every 0.2 s)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(0.2)
    raise AssertionError(f"flow run {run_id} did not end within {within}s")
