"""A training function that Prefect workers import by name ("tests.workpool_train:train")."""

from __future__ import annotations

import time
from typing import Any


def train(config: dict[str, Any], trial: Any) -> dict[str, float]:
    loss = 1.0
    for epoch in range(1, 10):
        loss = config["q"] + 1.0 / epoch
        trial.report(epoch, loss=loss)
        time.sleep(0.02)
    return {"loss": loss}


def slow_first_attempt(config: dict[str, Any], trial: Any) -> float:
    """Reports its process id, then (first attempt only) runs for a long time, reporting as it goes."""
    import os

    trial.report(1, loss=1.0, pid=float(os.getpid()))
    if trial.attempt == 1 and config["slow"]:
        for step in range(2, 600):
            time.sleep(0.1)
            trial.report(step, loss=1.0)
    return 0.5


def only_the_first_is_slow(config: dict[str, Any], trial: Any) -> float:
    """Trial `i=0`, at its first attempt, reports its process id and runs for a minute; the others end at once."""
    import os

    if config["i"] == 0 and trial.attempt == 1:
        trial.report(1, loss=1.0, pid=float(os.getpid()))
        for step in range(2, 600):
            time.sleep(0.1)
            trial.report(step, loss=1.0)
    return 0.5 + config["i"]
