"""Scale: a sweep with 1,000 and 10,000 stored trials, for the random and TPE strategies.

    .venv/bin/python -m benchmarks.scale --trials 1000 10000

Each row runs in a fresh process, on a SQLite store filled with N finished trials of a 4-parameter
space (written through the store's own API, as a sweep writes them), and measures:
- open: opening the store and reading every trial (what a resumed sweep does first);
- rebuild: building the strategy from those trials (`restore`: random replays its stream, TPE is told
  every result);
- ask: the strategy's ask latency with N trials told (median and 90th percentile over 20 asks, each
  followed by a tell);
- resume: `sweep()` continuing the stored sweep for 10 more trivial trials, end to end (Prefect's
  ephemeral server already up), with artifacts and plots on, as a user runs it;
- peak MB: the process's peak resident memory at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import flow


def space() -> dict[str, Any]:
    from prefect_hpo import Categorical, Float, Int

    return {
        "lr": Float(1e-4, 1e-1, log=True),
        "wd": Float(1e-6, 1e-2, log=True),
        "units": Int(16, 256),
        "act": Categorical(["relu", "tanh", "gelu"]),
    }


def trivial(config: dict[str, Any]) -> float:
    return float(config["lr"]) * 10 + float(config["wd"]) + config["units"] / 1000


@flow
def _warm() -> None:
    return None


def _row(trials: int, strategy: str, folder: str) -> dict[str, float]:
    from prefect_hpo import Budget, SqlTrialStore, sweep
    from prefect_hpo.budget import Budget as _Budget
    from prefect_hpo.objective import build_objectives
    from prefect_hpo.records import TrialState
    from prefect_hpo.space import SearchSpace, config_hash
    from prefect_hpo.strategies import build_strategy
    from prefect_hpo.strategies.base import ResumableStrategy

    url = f"sqlite:///{folder}/scale.db"
    search = SearchSpace.build(space())
    objectives = build_objectives("loss")
    name = f"scale-{strategy}"
    store = SqlTrialStore(url)
    sid = store.open_sweep(
        name,
        space=search.to_dict(),
        objectives=[o.to_dict() for o in objectives],
        strategy=strategy,
        budget=_Budget(max_trials=trials + 10).to_dict(),
    )
    filler = build_strategy("random", search, objectives, seed=1)
    for number in range(trials):
        config = filler.ask().config
        assert config is not None
        store.create_trial(
            sid, number, config, config_hash(config), TrialState.COMPLETE, values=[trivial(config)], metrics={}
        )
    store.close()

    started = time.perf_counter()
    store = SqlTrialStore(url)
    stored = store.trials(store.sweep_id(name))
    opened = time.perf_counter() - started
    started = time.perf_counter()
    searcher = build_strategy(strategy, search, objectives, seed=0, stored_trials=len(stored))
    if isinstance(searcher, ResumableStrategy):
        searcher.restore(stored)
    else:
        for record in stored:
            searcher.tell(record)
    rebuilt = time.perf_counter() - started
    asks = []
    template = stored[-1]
    for i in range(20):
        started = time.perf_counter()
        config = searcher.ask().config
        asks.append(time.perf_counter() - started)
        assert config is not None
        value = trivial(config)
        searcher.tell(
            dataclasses.replace(
                template,
                number=trials + i,
                config=config,
                config_hash=config_hash(config),
                values=(value,),
            )
        )
    store.close()

    _warm()
    started = time.perf_counter()
    result = sweep(
        trivial,
        space(),
        "loss",
        strategy,
        Budget(max_trials=trials + 10),
        storage=url,
        name=name,
        seed=0,
        workers="threads",
        show_progress=False,
    )
    resumed = time.perf_counter() - started
    assert len(result.records) == trials + 10
    return {
        "open": opened,
        "rebuild": rebuilt,
        "ask_median": statistics.median(asks),
        "ask_p90": statistics.quantiles(asks, n=10)[-1],
        "resume": resumed,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--strategies", nargs="+", default=["random", "tpe"])
    parser.add_argument("--_row", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._row:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(_row(int(args._row[0]), args._row[1], folder)))
        return
    env = dict(os.environ, PREFECT_LOGGING_LEVEL="WARNING", PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    print(f"SQLite store; {os.cpu_count()} cores; one fresh process per row\n")
    print("| stored trials | strategy | open s | rebuild s | ask ms (median) | ask ms (p90) | resume +10 s | peak MB |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for trials in args.trials:
        for strategy in args.strategies:
            cmd = [sys.executable, "-m", "benchmarks.scale", "--_row", str(trials), strategy]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1])
            if out.returncode != 0:
                print(f"| {trials} | {strategy} | failed: {out.stderr.strip().splitlines()[-1:]} | | | | | |")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"| {trials} | {strategy} | {r['open']:.2f} | {r['rebuild']:.2f} | {r['ask_median'] * 1000:.1f} | "
                f"{r['ask_p90'] * 1000:.1f} | {r['resume']:.1f} | {r['peak_mb']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
