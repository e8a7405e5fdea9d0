"""Sweeps run as a process of their own for tests/test_secrets.py, as a user's script runs them.

`python -m tests.secrets_sweep NAME=STORAGE ...` runs one small sweep (8 trials, 4 local worker processes)
per argument, each on the storage given, and prints each sweep's name and trial count.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect_hpo import Budget, Float, sweep


def train(config: dict[str, Any], trial: Any) -> float:
    """Two reports, then the distance to 0.3."""
    for step in (1, 2):
        trial.report(step, loss=abs(config["x"] - 0.3) + 1.0 / step)
    return abs(config["x"] - 0.3)


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        name, storage = argument.split("=", 1)
        result = sweep(
            train,
            {"x": Float(0.0, 1.0)},
            "loss",
            "random",
            Budget(max_trials=8, max_concurrent=4),
            storage=storage,
            name=name,
            seed=0,
            artifact_interval=0,
        )
        print(name, len(result.records), flush=True)
