"""A training function for the interrupt tests, importable by a sweep running in a child process."""

from __future__ import annotations

import time
from typing import Any


def steady(config: dict[str, Any], trial: Any) -> float:
    """Forty steps of 0.1 s from where an earlier attempt left off; logs `number attempt first-step` per start."""
    first = (trial.resume_step or 0) + 1
    with open(config["log"], "a") as log:
        log.write(f"{trial.number} {trial.attempt} {first}\n")
    for step in range(first, 41):
        time.sleep(0.1)
        trial.report(step, loss=config["x"] + 1.0 / step)
    return float(config["x"])
