"""Training functions for the fault-injection tests, importable by sweeps in child processes."""

from __future__ import annotations

import os
import re
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
    """Writes to the store without pause (a report of 20 metrics per step).

    The first run of a victim (an x named in `config["victims"]`) leaves its pid in a file named after its
    configuration, so that a test can kill the process while it writes, and then waits to be killed rather
    than returning: a kill that comes late still lands before the result, and every victim runs again.
    """
    folder = Path(config["pids"])
    ran = folder / f"{config['x']!r}.ran"
    victim = not ran.exists() and config["x"] in (float(v) for v in config["victims"].split())
    ran.touch()
    if victim:
        Path(folder, f"{config['x']!r}.{os.getpid()}").touch()
    for step in range(1, STEPS + 1):
        trial.report(step, **{f"m{i}": config["x"] * step + i for i in range(20)})
    if victim:
        time.sleep(120)  # the test kills it long before this
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


def cut_off(config: dict[str, Any], trial: Any) -> float:
    """A trial whose first two attempts are cut off by the test (it kills the sweep's parent), whose third
    attempt's process dies (exit code 3), and whose fourth returns x.

    Attempts 1 and 2 leave a file named `<attempt>.<pid>` for the test, then wait to be killed with the parent.
    """
    if trial.attempt <= 2:
        Path(config["pids"], f"{trial.attempt}.{os.getpid()}").touch()
        time.sleep(120)  # the test kills the parent, and so this process, long before this
    if trial.attempt == 3:
        os._exit(3)
    return float(config["x"])


def handed_over(config: dict[str, Any], trial: Any) -> float:
    """Leaves a file `ready.<pid>`, waits until the test writes to the FIFO `go` (the test stops the parent
    first), appends a line to a log, returns x."""
    folder = Path(config["pids"])
    Path(folder, f"ready.{os.getpid()}").touch()
    with open(folder / "go") as fifo:  # blocks until the test opens it for writing, then reads to its end
        fifo.read()
    with open(folder / "ran.log", "a") as log:
        log.write(f"{trial.attempt}\n")
    return float(config["x"])


def busy_in_c(config: dict[str, Any], trial: Any) -> float:
    """Leaves a file named after its pid, then backtracks in the regular-expression engine: C code that holds
    the GIL for far longer than a test lasts, so that no other thread of its process runs meanwhile."""
    Path(config["pids"], f"busy.{os.getpid()}").touch()
    re.fullmatch(r"(a+)+b", "a" * 64)
    return float(config["x"])
