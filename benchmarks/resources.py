"""Resources per trial: how well mixed GPU requests fill the devices, and what per-trial thread limits save.

    .venv/bin/python -m benchmarks.resources --trials 32 --seconds 2 --rounds 2

Devices. Trials hold a declared device (`devices=["0", "1", "2", "3"]`: no GPU is needed, each trial sleeps
while it holds its share) for `--seconds`; their requests cycle through 0.25, 0.5, 1 and 2 GPUs. The device
time they use is share x devices x seconds, summed; the ideal is that time spread over the 4 devices with no
gap. Utilization = device time used / (4 devices x the trials phase: first trial's start to the last one's end);
the target is 90% or more. 16 slots, so that the devices, not the slots, are the limit.

Threads. Four trials at once, each a BLAS-heavy job (numpy matrix products, what scikit-learn's linear models
and PCA spend their time in), on this machine's cores: with prefect_hpo's default (each trial's BLAS limited to
cores / 4 threads) and without it (each trial given every core as its threads, as a process that sets nothing
gets), side by side in rounds that alternate. Wall time of the trials phase, median over the rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

SIZES = (0.25, 0.5, 1, 2)


def holds(config: dict[str, Any], trial: Any) -> float:
    """Holds its share of a device for `seconds` (a sleep: the device is declared, not used)."""
    time.sleep(config["seconds"])
    return float(config["i"])


def blas(config: dict[str, Any], trial: Any) -> float:
    """Matrix products on 600 x 600 floats: time spent in the BLAS library's threads."""
    import numpy as np

    rng = np.random.default_rng(int(config["i"]))
    a = rng.standard_normal((600, 600))
    total = 0.0
    for _ in range(int(config["products"])):
        a = a @ a.T
        a /= np.abs(a).max()
        total += float(a[0, 0])
    return total


def _phase(result: Any) -> tuple[float, list[Any]]:
    records = [r for r in result.records if r.started_at is not None and r.finished_at is not None]
    first = min(r.started_at.timestamp() for r in records)
    last = max(r.finished_at.timestamp() for r in records)
    return last - first, records


def devices_case(trials: int, seconds: float, folder: str, label: str) -> tuple[float, float, float]:
    """(trials phase s, device-seconds used, utilization) of one sweep of mixed requests on 4 declared devices."""
    from prefect_hpo import Budget, Int, sweep

    result = sweep(
        holds,
        {"i": Int(0, trials - 1), "seconds": seconds},
        "loss",
        "grid",
        Budget(max_trials=trials, max_concurrent=16),
        storage=f"sqlite:///{folder}/devices-{label}.db",
        name=f"devices-{label}",
        resources=lambda c: {"gpu": SIZES[int(c["i"]) % len(SIZES)]},
        devices=["0", "1", "2", "3"],
        show_progress=False,
        artifact_interval=None,
    )
    phase, records = _phase(result)
    used = sum(min(1.0, SIZES[int(r.config["i"]) % len(SIZES)]) * len(r.devices) * seconds for r in records)
    return phase, used, used / (4 * phase)


def threads_case(limited: bool, products: int, folder: str, label: str) -> float:
    """Trials phase s of four BLAS-heavy trials at once, limited to their share of the cores or not."""
    from prefect_hpo import Budget, Int, sweep
    from prefect_hpo.resources import machine_cpus

    cores = machine_cpus()
    unlimited: dict[str, Any] = {"resources": {"cpu": cores}, "capacity": {"cpu": cores * 4}}
    result = sweep(
        blas,
        {"i": Int(0, 3), "products": products},
        "loss",
        "grid",
        Budget(max_trials=4, max_concurrent=4),
        storage=f"sqlite:///{folder}/threads-{label}.db",
        name=f"threads-{label}",
        show_progress=False,
        artifact_interval=None,
        **({} if limited else unlimited),
    )
    phase, _ = _phase(result)
    return phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--products", type=int, default=40, help="matrix products per BLAS-heavy trial")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect_hpo.resources import machine_cpus

    print(f"{machine_cpus()} cores; {args.rounds} rounds\n")
    with tempfile.TemporaryDirectory() as folder:
        rows: list[tuple[float, float, float]] = []
        limited: list[float] = []
        free: list[float] = []
        for k in range(args.rounds):
            rows.append(devices_case(args.trials, args.seconds, folder, str(k)))
            first, second = (True, False) if k % 2 == 0 else (False, True)
            for limit in (first, second):
                taken = threads_case(limit, args.products, folder, f"{k}-{limit}")
                (limited if limit else free).append(taken)
        print(f"Devices: {args.trials} trials of {args.seconds:g} s, requests cycling {SIZES} GPUs, 4 devices\n")
        print("| round | trials phase s | device-seconds used | ideal s | utilization |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for k, (phase, used, share) in enumerate(rows):
            print(f"| {k + 1} | {phase:.2f} | {used:.1f} | {used / 4:.2f} | {share:.0%} |")
        print("\nThreads: 4 BLAS-heavy trials at once\n")
        print("| threads per trial | trials phase s (median) | runs (s) |")
        print("| --- | ---: | --- |")
        share = max(1, machine_cpus() // 4)
        for name, times in ((f"{share} (prefect_hpo's default)", limited), (f"{machine_cpus()} (none set)", free)):
            print(f"| {name} | {statistics.median(times):.2f} | {', '.join(f'{t:.2f}' for t in times)} |")
        ratio = statistics.median(free) / statistics.median(limited)
        print(f"\nwithout limits / with limits: {ratio:.2f}x")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"\n(benchmark ran {time.perf_counter() - started:.0f} s)")
