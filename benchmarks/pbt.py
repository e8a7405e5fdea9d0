"""Population-based training against random search with the same compute, on a toy whose best
hyperparameter changes over time (`benchmarks.problems.noisy_sgd_trial`: SGD on w² with gradient noise,
where a learning rate that starts large and decays beats every fixed one).

    .venv/bin/python -m benchmarks.pbt --seeds 0 1 2 3 4

For each seed: PBT with a population of 8, 10 generations of 10 steps (800 steps), against random
search of 8 fixed learning rates trained 100 steps each (800 steps), both through prefect_hpo with
8 slots. Printed: the best final loss of each, the ratio, and the learning rates the best PBT member
went through (its schedule).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

from benchmarks.problems import noisy_sgd_trial
from prefect_hpo import Budget, Float, TrialState, sweep

SPACE = {"lr": Float(1e-3, 0.5, log=True)}


def run_pbt(seed: int, folder: str) -> tuple[float, list[float]]:
    result = sweep(
        noisy_sgd_trial,
        SPACE,
        "loss",
        budget=Budget(max_trials=80, max_concurrent=8),
        storage=f"sqlite:///{folder}/pbt.db",
        name=f"pbt-{seed}",
        strategy={"type": "pbt", "population": 8, "interval": 10, "generations": 10},
        seed=seed,
        workers="threads",
        checkpoints=f"{folder}/checkpoints",
        show_progress=False,
        artifact_interval=None,
    )
    records = {r.number: r for r in result.records}
    last = [r for r in records.values() if r.lineage and r.lineage["generation"] == 9 and r.value is not None]
    best = min(last, key=lambda r: r.value or 0.0)
    schedule, node = [], best
    while True:  # back through its parents: the learning rates it trained with, first to last
        schedule.append(node.config["lr"])
        parent = node.lineage["parent"] if node.lineage else None
        if parent is None:
            break
        node = records[parent]
    return float(best.value or 0.0), schedule[::-1]


def run_random(seed: int, folder: str) -> float:
    result = sweep(
        noisy_sgd_trial,
        SPACE,
        "loss",
        "random",
        Budget(max_trials=8, max_concurrent=8, max_steps=100),
        storage=f"sqlite:///{folder}/random.db",
        name=f"random-{seed}",
        seed=seed,
        workers="threads",
        checkpoints=f"{folder}/checkpoints",
        show_progress=False,
        artifact_interval=None,
    )
    return min(r.value for r in result.records if r.state == TrialState.COMPLETE and r.value is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    print("noisy SGD toy, 800 steps each; 8 slots\n")
    print("| seed | PBT best loss | random search best loss | random / PBT | best PBT member's learning rates |")
    print("| ---: | ---: | ---: | ---: | --- |")
    ratios = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            pbt, schedule = run_pbt(seed, folder)
            fixed = run_random(seed, folder)
            ratios.append(fixed / pbt)
            rates = " ".join(f"{lr:.3g}" for lr in schedule)
            print(f"| {seed} | {pbt:.5f} | {fixed:.5f} | {fixed / pbt:.1f}x | {rates} |", flush=True)
    print(f"\nmedian ratio random / PBT: {statistics.median(ratios):.1f}x over {len(ratios)} seeds")


if __name__ == "__main__":
    main()
