"""Training functions for the fault-injection tests, importable by sweeps in child processes."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def bowl(config: dict[str, Any], trial: Any) -> float:
    """Three steps of 0.05 s on a bowl with its minimum at (0.3, 0.7); appends the finished result to a log."""
    value = (config["x"] - 0.3) ** 2 + (config["y"] - 0.7) ** 2
    for step in range(1, 4):
        time.sleep(0.05)
        trial.report(step, loss=value + 1.0 / step)
    with open(config["log"], "a") as log:
        log.write(f"{config['x']!r} {config['y']!r} {value!r}\n")
    return value


STEPS = 1500  # about a second of back-to-back writes on SQLite


def chatty(config: dict[str, Any], trial: Any) -> float:
    """Writes to the store without pause (a report of 20 metrics per step), after leaving its pid in a file
    named after its configuration, so that a test can kill the process while it writes."""
    Path(config["pids"], f"{config['x']!r}.{os.getpid()}").touch()
    for step in range(1, STEPS + 1):
        trial.report(step, **{f"m{i}": config["x"] * step + i for i in range(20)})
    return float(config["x"])


def dies(config: dict[str, Any], trial: Any) -> float:
    """Ends its own process at once when told to (a segfault, os._exit in a library); else returns x."""
    if config["die"]:
        os._exit(3)
    return float(config["x"])


def hoarder(config: dict[str, Any], trial: Any) -> float:
    """Thirty reports of fifty metrics each (a store that grows fast); appends the finished result to a log."""
    value = (config["x"] - 0.3) ** 2
    for step in range(1, 31):
        trial.report(step, loss=value, **{f"m{i}": config["x"] * step + i for i in range(50)})
    with open(config["log"], "a") as log:
        log.write(f"{config['x']!r} {value!r}\n")
    return value
