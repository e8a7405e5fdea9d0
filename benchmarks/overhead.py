"""Per-trial overhead of trivial trials, side by side in one run.

    .venv/bin/python -m benchmarks.overhead --trials 200 1000

Rows:
- prefect_hpo, workers=threads / processes: `sweep()` with the default random strategy,
  every trial durable in a SQLite store and visible as a Prefect task run, artifacts and plots on
  (the defaults). "steady trials/s" is the rate between the 10th and the 90th percentile of the
  trials' end times: the sweep's throughput without its fixed start (flow run, worker pool) and end
  (last artifact update, plots).
- bare Prefect: a flow submitting the same number of no-op task runs (Prefect's own floor).
- Optuna in memory / Optuna SQLite: `study.optimize` with RandomSampler (no Prefect).
- hyperopt: `fmin` with random search over in-memory `Trials` (hyperopt persists only to MongoDB).
- Ray Tune, reuse_actors on / off: `Tuner.fit()` of a function trainable, 4 concurrent trials,
  results persisted to its local experiment folder; `ray.init` is not timed.

Peers that are not project dependencies come from the `bench` extra (`pip install -e .[bench]`),
which `bash scripts/bench.sh` installs.

Each row runs in a fresh process so that memory peaks are its own and the ephemeral
Prefect server start is excluded from the figures (it is timed separately).
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

CASES = (
    "prefect_hpo threads",
    "prefect_hpo processes",
    "bare Prefect tasks",
    "Optuna in memory",
    "Optuna SQLite",
    "hyperopt",
    "Ray Tune reuse_actors",
    "Ray Tune fresh actors",
)


def trivial(config: dict[str, Any]) -> float:
    return float(config["x"])


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_peer(case: str, trials: int, workdir: str) -> float:
    """Seconds for `trials` trivial trials through a peer that is not Prefect."""
    if case == "hyperopt":
        import hyperopt
        import numpy as np

        t = time.perf_counter()
        hyperopt.fmin(
            lambda c: float(c["x"]),
            {"x": hyperopt.hp.uniform("x", 0.0, 1.0)},
            algo=hyperopt.rand.suggest,
            max_evals=trials,
            trials=hyperopt.Trials(),
            rstate=np.random.default_rng(0),
            show_progressbar=False,
        )
        return time.perf_counter() - t
    if case.startswith("Ray Tune"):
        import ray
        from ray import tune

        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)

        def trainable(config: dict[str, Any]) -> dict[str, float]:
            return {"loss": float(config["x"])}

        tuner = tune.Tuner(
            trainable,
            param_space={"x": tune.uniform(0.0, 1.0)},
            tune_config=tune.TuneConfig(
                metric="loss",
                mode="min",
                num_samples=trials,
                max_concurrent_trials=4,
                reuse_actors=case.endswith("reuse_actors"),
            ),
            run_config=tune.RunConfig(storage_path=workdir, name="overhead", verbose=0),
        )
        t = time.perf_counter()
        grid = tuner.fit()
        elapsed = time.perf_counter() - t
        assert len(grid) == trials
        ray.shutdown()
        return elapsed
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{workdir}/optuna.db" if "SQLite" in case else None
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), storage=storage)
    t = time.perf_counter()
    study.optimize(lambda tr: tr.suggest_float("x", 0.0, 1.0), n_trials=trials)
    return time.perf_counter() - t


def _run_case(case: str, trials: int, workdir: str) -> dict[str, float]:
    if not case.startswith(("prefect_hpo", "bare")):
        return {"elapsed": _run_peer(case, trials, workdir), "peak_mb": _peak_mb(), "server_start": 0.0}
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    @flow
    def warm() -> None:
        return None

    t = time.perf_counter()
    warm()  # start the ephemeral server: not part of any row
    server_start = time.perf_counter() - t

    if case.startswith("prefect_hpo"):
        from prefect_hpo import Budget, Float, sweep

        workers = case.split()[1]
        t = time.perf_counter()
        result = sweep(
            trivial,
            {"x": Float(0.0, 1.0)},
            "loss",
            "random",
            Budget(max_trials=trials, max_concurrent=4),
            storage=f"sqlite:///{workdir}/hpo.db",
            name="overhead",
            workers=workers,  # type: ignore[arg-type]
            show_progress=False,
        )
        elapsed = time.perf_counter() - t
        assert len(result.records) == trials
        ends = sorted(r.finished_at.timestamp() for r in result.records if r.finished_at is not None)
        first, last = len(ends) // 10, len(ends) * 9 // 10
        steady = (last - first) / (ends[last] - ends[first])
        return {"elapsed": elapsed, "peak_mb": _peak_mb(), "server_start": server_start, "steady": steady}
    elif case == "bare Prefect tasks":

        @task
        def noop(i: int) -> int:
            return i

        @flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
        def bare(n: int) -> None:
            futures = [noop.submit(i) for i in range(n)]
            for f in futures:
                f.result()

        t = time.perf_counter()
        bare(trials)
        elapsed = time.perf_counter() - t
    return {"elapsed": elapsed, "peak_mb": _peak_mb(), "server_start": server_start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--_case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._case:
        with tempfile.TemporaryDirectory() as workdir:
            print(json.dumps(_run_case(args._case, args.trials[0], workdir)))
        return

    env = dict(os.environ, PREFECT_LOGGING_LEVEL="WARNING", PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    env.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
    print(f"trivial trials; {os.cpu_count()} cores; one fresh process per row\n")
    print("| case | trials | seconds | trials/s | ms/trial | steady trials/s | peak MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in args.trials:
        for case in args.cases:
            if case == "Ray Tune fresh actors" and n > 200:
                print(f"| {case} | {n} | skipped: about 0.6 s a trial here (100 trials took a minute) | | | | |")
                continue
            cmd = [sys.executable, "-m", "benchmarks.overhead", "--trials", str(n), "--_case", case]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1])
            if out.returncode != 0:
                print(f"| {case} | {n} | failed: {out.stderr.strip().splitlines()[-1:]} | | | | |")
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rate = n / row["elapsed"]
            steady = f"{row['steady']:.0f}" if "steady" in row else ""
            print(
                f"| {case} | {n} | {row['elapsed']:.2f} | {rate:.0f} | {1000 / rate:.2f} | {steady} "
                f"| {row['peak_mb']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
