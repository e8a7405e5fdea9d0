"""A sweep's start: its helper processes start before Prefect's server, and none outlives the script.

Speed itself is measured by `benchmarks/startup.py`, not here; these tests check the order of events and
what is left after the script, on a real Prefect temporary server and real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

from tests.conftest import ROOT

MARKER = "PREFECT_HPO_TEST_STARTUP"


def _carrying(marker: str) -> list[psutil.Process]:
    """Live processes whose environment holds `marker` (a script's, and every process it started)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER) == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _running(pid: int, marker: str) -> bool:
    """The process exists, is not a zombie (an exited child that its new parent, init, has yet to reap), and
    is still the script's (its pid not reused by another process on a busy machine)."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and process.environ().get(MARKER) == marker
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def test_workers_start_before_prefects_server_and_no_process_outlives_the_script(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{MARKER: marker})
    env.pop("PREFECT_API_URL", None)  # Prefect's temporary server, started by the script
    script = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "startup_script.py"), f"sqlite:///{tmp_path}/hpo.db"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,  # its own process group, as a terminal gives a script
    )
    assert script.returncode == 0, script.stderr[-3000:]
    seen = json.loads(script.stdout.strip().splitlines()[-1])
    # sweep() starts the fork server its workers come from first, while Prefect starts its server (and
    # then creates the flow run), rather than inside the flow run
    assert seen["fork_server"] < seen["server"], seen
    assert seen["refused"] == "SweepConflictError", seen  # the second sweep failed after its head start
    assert len(seen["helpers"]) >= 4, seen  # the server, the fork server, 2 workers (and the plot helper)

    # A fork server sees its parent's exit a moment later; nothing may stay for longer than that.
    deadline = time.monotonic() + 30
    while True:
        left = _carrying(marker)
        helpers = [pid for pid in seen["helpers"] if _running(pid, marker)]
        if not (left or helpers) or time.monotonic() > deadline:
            break
        psutil.wait_procs(left, timeout=1) if left else time.sleep(0.2)
    assert not left, [(p.pid, p.cmdline()) for p in left]
    assert not helpers, seen
