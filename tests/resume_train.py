"""Training functions for the resume tests, importable by a sweep running in a child process."""

from __future__ import annotations

import time
from typing import Any


def slow(config: dict[str, Any], trial: Any) -> float:
    """Five steps of 0.2 s; appends each finished trial to the log file named in the config."""
    for step in range(1, 6):
        time.sleep(0.2)
        trial.report(step, loss=config["x"] + 1.0 / step)
    with open(config["log"], "a") as log:
        log.write(f"{config['x']!r}\n")
    return float(config["x"])
