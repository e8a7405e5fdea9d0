"""A small ASHA sweep run as a script by the log tests: 4 slots, worker processes, Prefect's defaults.

Usage: python -m tests.logs_sweep STORAGE. After the sweep it prints one line
`TASK-RUNS <json>` with each trial's state and the state name of its task run, read back
from Prefect's (temporary) server while the process still runs it.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client

from prefect_hpo import Budget, Float, sweep
from prefect_hpo.schedulers import ASHAScheduler


def train(config: dict[str, Any], trial: Any) -> float:
    """Five steps; the loss orders trials by x, so ASHA stops the worse ones at their first rungs. Trial 2
    fails (as a diverging configuration would): the sweep goes on."""
    if trial.number == 2:
        raise ValueError("the loss diverged")
    loss = 1.0
    for step in range(1, 6):
        time.sleep(0.05)
        loss = config["x"] + 1.0 / step
        trial.report(step, loss=loss)
    return loss


if __name__ == "__main__":
    result = sweep(
        train,
        {"x": Float(0.0, 1.0)},
        "loss",
        "random",
        Budget(max_trials=12, max_concurrent=4),
        storage=sys.argv[1],
        name="logs",
        scheduler=ASHAScheduler(max_t=5, grace_period=1, reduction_factor=3),
        seed=3,
    )
    with get_client(sync_client=True) as client:
        runs = {
            record.number: (
                record.state.value,
                client.read_task_run(UUID(record.task_run_id)).state_name if record.task_run_id else None,
            )
            for record in result.records
        }
    print("TASK-RUNS " + json.dumps(runs), flush=True)
