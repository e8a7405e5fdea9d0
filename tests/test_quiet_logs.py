"""What a person reads while a normal sweep runs: no ERROR and no traceback, from the first run on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.prefect

#: Settings the test session sets for quiet Prefect; a user's first run has none of them.
_QUIETING = (
    "PREFECT_SERVER_ANALYTICS_ENABLED",
    "DO_NOT_TRACK",
    "PREFECT_LOGGING_LEVEL",
    "PREFECT_SERVER_LOGGING_LEVEL",
    "PREFECT_API_URL",
)


def test_a_first_asha_sweep_logs_no_error_and_its_pruned_trials_end_pruned(tmp_path: Path) -> None:
    """A fresh PREFECT_HOME (the temporary server creates its database), Prefect's default logging,
    4 worker processes and ASHA: the output holds no ERROR line and no traceback (offline, the
    temporary server's telemetry logged an ERROR on every run, and on a first run a `database is
    locked` traceback); each stopped trial's task run ends in a Completed state named "Pruned"; the trial
    that fails ends Failed, logged once at WARNING (Prefect logged two ERROR lines and a stray line)."""
    env = {k: v for k, v in os.environ.items() if k not in _QUIETING}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_HPO_HOME=str(tmp_path / "hpo"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "tests.logs_sweep", storage],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    noisy = [line for line in output.splitlines() if "ERROR" in line or "Traceback" in line]
    assert not noisy, "\n".join(noisy[:20])
    assert not any(line.endswith("| ") for line in output.splitlines())  # no empty "best" column
    runs = json.loads(output.split("TASK-RUNS ", 1)[1].splitlines()[0])
    states = {number: tuple(pair) for number, pair in runs.items()}
    assert {state for state, _ in states.values()} == {"COMPLETE", "PRUNED", "FAIL"}, states
    assert states["2"] == ("FAIL", "Failed")  # its task run Failed, logged once, at WARNING
    for state, run_state in states.values():
        assert run_state == {"PRUNED": "Pruned", "FAIL": "Failed"}.get(state, "Completed"), states
    failed = [line for line in output.splitlines() if "trial-2" in line and "Failed" in line]
    assert len(failed) == 1 and "WARNING" in failed[0] and "the loss diverged" in failed[0], failed
    assert "NoneType: None" not in output
