"""Parallel efficiency: trials that sleep a fixed time, with 1, 2, 4 and 8 slots.

    .venv/bin/python -m benchmarks.parallel --seconds 0.2 2 --slots 1 2 4 8

Each row runs `--trials` trials that sleep `d` seconds with `W` slots and compares with the ideal
N·d/W (efficiency = ideal / measured) two times: the sweep's wall time, from calling `sweep()` to
its return (the ephemeral Prefect server already up), which includes the fixed start (flow run,
worker pool) and end (plots, last artifacts) of a sweep; and the trials phase, from the first
trial's start to the last one's end, which is what keeping every slot busy decides. Sleeping
trials use no CPU, so on this 2-core machine 8 slots are as real as 1; what the ratios show is
the time prefect_hpo spends between trials (ask, commit, dispatch, hearing the end) and at the
start and end of a sweep.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from typing import Any

from prefect import flow


def sleeper(config: dict[str, Any]) -> float:
    time.sleep(config["d"])
    return float(config["x"])


@flow
def _warm() -> None:
    return None


def measure(seconds: float, slots: int, trials: int, workers: str, folder: str) -> tuple[float, float]:
    """(end-to-end seconds of `sweep()`, seconds from the first trial's start to the last one's end)."""
    from prefect_hpo import Budget, Float, sweep

    started = time.perf_counter()
    result = sweep(
        sleeper,
        {"x": Float(0.0, 1.0), "d": seconds},
        "loss",
        "random",
        Budget(max_trials=trials, max_concurrent=slots),
        storage=f"sqlite:///{folder}/hpo.db",
        name=f"parallel-{seconds}-{slots}-{workers}",
        workers=workers,  # type: ignore[arg-type]
        show_progress=False,
    )
    elapsed = time.perf_counter() - started
    assert len(result.records) == trials
    first = min(r.started_at.timestamp() for r in result.records if r.started_at is not None)
    last = max(r.finished_at.timestamp() for r in result.records if r.finished_at is not None)
    return elapsed, last - first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[0.2, 2.0])
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--trials", type=int, default=32, help="trials per row (a multiple of every slot count)")
    parser.add_argument("--workers", nargs="+", default=["processes", "threads"])
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    _warm()
    print(f"{args.trials} sleeping trials per row; {os.cpu_count()} cores\n")
    print("| trial seconds | slots | workers | ideal s | sweep() s | efficiency | trials phase s | efficiency |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as folder:
        for seconds in args.seconds:
            for slots in args.slots:
                for workers in args.workers:
                    ideal = math.ceil(args.trials / slots) * seconds
                    elapsed, phase = measure(seconds, slots, args.trials, workers, folder)
                    print(
                        f"| {seconds:g} | {slots} | {workers} | {ideal:.1f} | {elapsed:.2f} | {ideal / elapsed:.0%} "
                        f"| {phase:.2f} | {ideal / phase:.0%} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
