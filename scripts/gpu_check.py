"""A real PyTorch sweep on a GPU: 8 trials at gpu=0.25 on one device (see scripts/gpu_check.sh).

Each trial trains a small MLP on scikit-learn's digits on `cuda` and logs what it saw: the device it ran on,
CUDA_VISIBLE_DEVICES, the GPU memory in use when it started (a fresh process: 0) and its interval. The check
passes when every trial ran on the GPU, four ran at once, and memory was freed between trials (each trial
started with none allocated, and the device's used memory after the sweep is back where it was before).
`--dry-run` runs the same sweep on the CPU with a declared device (for a machine without a GPU: it checks the
script, not the GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def train(config: dict[str, Any], trial: Any) -> float:
    import torch
    from sklearn.datasets import load_digits

    device = torch.device("cpu" if config["dry_run"] else "cuda")
    start = time.time()
    allocated = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    x, y = load_digits(return_X_y=True)
    xs = torch.tensor(x / 16.0, dtype=torch.float32, device=device)
    ys = torch.tensor(y, device=device)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, config["width"]), torch.nn.ReLU(), torch.nn.Linear(config["width"], 10)
    )
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    loss = torch.tensor(0.0)
    for epoch in range(1, 31):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xs), ys)
        loss.backward()
        optimizer.step()
        trial.report(epoch, loss=loss.item())
        time.sleep(0.05)  # long enough that the trials overlap
    seen = {
        "number": trial.number,
        "device": str(next(model.parameters()).device),
        "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "devices": trial.devices,
        "allocated_at_start": allocated,
        "start": start,
        "end": time.time(),
    }
    with open(config["log"], "a") as log:
        log.write(json.dumps(seen) + "\n")
    return loss.item()


def gpu_memory_used() -> int | None:
    """The device's used memory in MiB, from nvidia-smi (the parent never initialises CUDA itself)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return int(out.stdout.strip().splitlines()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, with a declared device")
    args = parser.parse_args()
    from prefect_hpo import Budget, Categorical, Float, sweep

    folder = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    log = folder / "trials.jsonl"
    before = None if args.dry_run else gpu_memory_used()
    result = sweep(
        train,
        {
            "lr": Float(1e-3, 3e-2, log=True),
            "width": Categorical([32, 64, 128]),
            "log": str(log),
            "dry_run": args.dry_run,
        },
        "loss",
        "random",
        Budget(max_trials=8, max_concurrent=8),
        storage=f"sqlite:///{folder / 'hpo.db'}",
        name="gpu-check",
        seed=0,
        resources={"gpu": 0.25},
        devices=["0"] if args.dry_run else "auto",
        artifact_interval=None,
    )
    after = None if args.dry_run else gpu_memory_used()
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    most = max(sum(1 for r in runs if r["start"] <= s["start"] < r["end"]) for s in runs)
    checks = {
        "8 trials completed": len(result.trials_by_state("COMPLETE")) == 8 and len(runs) == 8,
        "each trial ran on the GPU": args.dry_run or all(r["device"].startswith("cuda") for r in runs),
        "each saw only its device": all(r["cuda_visible"] == ",".join(r["devices"]) == "0" for r in runs),
        "four ran at once": most == 4,
        "each started with no GPU memory allocated": all(r["allocated_at_start"] == 0 for r in runs),
        "GPU memory freed after the sweep": args.dry_run
        or (before is not None and after is not None and after <= before + 64),
    }
    print(f"trials: {len(runs)}, most at once: {most}, GPU memory used before/after (MiB): {before}/{after}")
    for run in sorted(runs, key=lambda r: r["start"]):
        print(
            f"  trial {run['number']}: {run['device']} CUDA_VISIBLE_DEVICES={run['cuda_visible']} "
            f"{run['start'] - runs[0]['start']:.2f}-{run['end'] - runs[0]['start']:.2f} s"
        )
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
