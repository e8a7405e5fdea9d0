"""A user's script for tests/test_startup.py: two sweeps in one process, the second refused, then exit.

Prints one JSON line: when (start time, pid) the fork server that made the first sweep's workers started
and when Prefect's temporary server did, whether the second sweep was refused, and the pids of the
script's helper processes seen while it ran."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import psutil

from prefect_hpo import Budget, Float, PrefectHPOError, sweep


def train(config: dict[str, Any]) -> dict[str, float]:
    """A trivial trial that names the process that forked its worker (the fork server)."""
    return {"loss": float(config["x"]), "fork_server": os.getppid()}


def started(process: psutil.Process) -> tuple[float, int]:
    """When a process started: its start time (10 ms steps), then its pid for two in the same step."""
    return process.create_time(), process.pid


def main() -> None:
    storage = sys.argv[1]
    helpers: set[int] = set()

    def seen(*_: Any) -> None:  # as each trial ends: the processes this script runs now, all levels down
        helpers.update(p.pid for p in psutil.Process().children(recursive=True))

    budget = Budget(max_trials=4, max_concurrent=2)
    space = {"x": Float(0.0, 1.0)}
    result = sweep(train, space, "loss", "random", budget, storage=storage, name="startup", on_trial_complete=seen)
    try:  # the same name with another space: refused inside the flow, after sweep() started its processes
        sweep(train, {"y": Float(0.0, 1.0)}, "loss", "random", budget, storage=storage, name="startup")
        refused = ""
    except PrefectHPOError as exc:
        refused = type(exc).__name__
    (fork_server,) = {int(r.metrics["fork_server"]) for r in result.records}
    (server,) = [p for p in psutil.Process().children() if "uvicorn" in p.cmdline()]
    report = {"fork_server": started(psutil.Process(fork_server)), "server": started(server)}
    print(json.dumps({**report, "refused": refused, "helpers": sorted(helpers)}))


if __name__ == "__main__":
    main()
