"""A training function for the resource tests, importable by worker processes: it writes what its process
saw (devices, thread counts, pid, its interval) to a log line, and may SIGKILL its own process once."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any


def holds_devices(config: dict[str, Any], trial: Any) -> float:
    start = time.time()
    seen = {
        "number": trial.number,
        "attempt": trial.attempt,
        "devices": trial.devices,
        "resources": trial.resources,
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "openblas": os.environ.get("OPENBLAS_NUM_THREADS"),
        "pid": os.getpid(),
        "host": os.environ.get("PREFECT_HPO_DEVICE_LOCKS", "this machine"),  # a test's hosts share one machine
        "start": start,
    }
    if config["i"] == config["dies"] and trial.attempt == 1:
        with open(config["log"], "a") as log:
            log.write(json.dumps({**seen, "killed": time.time()}) + "\n")
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(config["seconds"])
    with open(config["log"], "a") as log:
        log.write(json.dumps({**seen, "end": time.time()}) + "\n")
    return float(config["i"])
