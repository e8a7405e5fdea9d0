"""Run a real sweep on the embedded default: `python -m flows.digits_sweep [--trials N] [--strategy tpe]`.

No server to start: Prefect runs in its ephemeral mode, trials run in local
worker processes, and every trial lands in a SQLite trial store.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from flows.digits_mlp import SPACE, train
from prefect_hpo import Budget, Objective, sweep
from prefect_hpo.reporting.artifacts import artifact_key
from prefect_hpo.reporting.plots_artifact import plots_folder
from prefect_hpo.store.urls import default_home, resolve_storage

DEMO_STORAGE = "runs/hpo.db"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--strategy", default="tpe")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--storage", default=DEMO_STORAGE, help="SQLAlchemy URL or SQLite file path")
    parser.add_argument("--name", default=None, help="sweep name (default: digits-mlp-<time>)")
    args = parser.parse_args()

    if args.storage == DEMO_STORAGE:
        Path(DEMO_STORAGE).parent.mkdir(exist_ok=True)  # the demo's own folder; a folder a user names must exist
    name = args.name or time.strftime("digits-mlp-%Y%m%d-%H%M%S")
    started = time.perf_counter()
    result = sweep(
        train,
        space=SPACE,
        objective=Objective("val_loss", "min"),
        strategy=args.strategy,
        budget=Budget(max_trials=args.trials, max_concurrent=args.concurrent),
        storage=args.storage,
        name=name,
        seed=args.seed,
    )
    took = time.perf_counter() - started
    columns = ["number", "val_loss", *[c for c in result.trials.columns if c.startswith("params_")], "duration"]
    print(f"\nsweep {name!r}: {len(result.records)} trials in {took:.1f}s ({result.stop_reason})")
    print(result.top(5)[columns].to_string(index=False))
    print(f"\nbest val_loss {result.best_value:.4f} with {result.best_config}")
    csv = result.to_csv(Path(args.storage).with_name(f"{name}.csv")) if "://" not in args.storage else None
    print(f"trial store: {args.storage}" + (f"; table: {csv}" if csv else ""))
    plots = plots_folder(resolve_storage(args.storage), name, default_home())
    print(f"plots: {plots}/ (also in the Prefect UI as the artifact {artifact_key(name)}-plots)")


if __name__ == "__main__":
    main()
