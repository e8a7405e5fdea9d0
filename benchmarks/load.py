"""Load test: one sweep of many trivial trials, against SQLite and PostgreSQL; time and the parent's peak memory.

    .venv/bin/python -m benchmarks.load [--trials 10000] [--concurrent 8] [--stores sqlite postgres]

Each row runs in a fresh process (its peak memory is its own; the ephemeral Prefect
server's start is excluded). The sweep runs with its defaults (artifacts updated
every 5 s, plots drawn at the end), threads as workers, the random strategy. After
it ends the row checks, from the store, that every trial is stored exactly once and
completed. PostgreSQL: a fresh schema in the local server (PREFECT_HPO_TEST_PG or
postgresql+psycopg://postgres@127.0.0.1:5432/test), dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

PG_ADMIN = os.environ.get("PREFECT_HPO_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def trivial(config: dict[str, Any]) -> float:
    return float(config["x"])


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pg_schema() -> tuple[str, Any]:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    schema = f"hpo_load_{uuid.uuid4().hex[:8]}"
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_ADMIN else "?"
    return f"{PG_ADMIN}{sep}options=-csearch_path%3D{schema}", (engine, schema)


def _run(store: str, trials: int, concurrent: int, workdir: str) -> dict[str, Any]:
    from prefect import flow
    from sqlalchemy import text

    from prefect_hpo import Budget, Float, SqlTrialStore, TrialState, sweep

    @flow
    def warm() -> None:
        return None

    warm()  # the ephemeral server's start is not part of the row
    cleanup = None
    url = f"sqlite:///{workdir}/hpo.db"
    if store == "postgres":
        url, cleanup = _pg_schema()
    try:
        started = time.perf_counter()
        sweep(
            trivial,
            {"x": Float(0.0, 1.0)},
            "loss",
            "random",
            Budget(max_trials=trials, max_concurrent=concurrent),
            storage=url,
            name="load",
            workers="threads",
            show_progress=False,
        )
        elapsed = time.perf_counter() - started
        check = SqlTrialStore(url)
        records = check.trials(check.sweep_id("load"))
        check.close()
        numbers = [r.number for r in records]
        stored_once = len(records) == trials and len(set(numbers)) == trials
        complete = sum(r.state == TrialState.COMPLETE for r in records)
        return {"elapsed": elapsed, "peak_mb": _peak_mb(), "stored_once": stored_once, "complete": complete}
    finally:
        if cleanup is not None:
            engine, schema = cleanup
            with engine.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--_store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._store:
        with tempfile.TemporaryDirectory() as workdir:
            print(json.dumps(_run(args._store, args.trials, args.concurrent, workdir)))
        return
    env = dict(os.environ, PREFECT_LOGGING_LEVEL="WARNING", PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    env.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
    print(f"{args.trials} trivial trials, {args.concurrent} concurrent (threads), {os.cpu_count()} cores\n")
    print("| store | trials | seconds | trials/s | parent peak MB | stored once | complete |")
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: |")
    for store in args.stores:
        cmd = [sys.executable, "-m", "benchmarks.load", "--trials", str(args.trials)]
        cmd += ["--concurrent", str(args.concurrent), "--_store", store]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1])
        if out.returncode != 0:
            print(f"| {store} | {args.trials} | failed: {out.stderr.strip().splitlines()[-1:]} | | | | |")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rate = args.trials / row["elapsed"]
        print(
            f"| {store} | {args.trials} | {row['elapsed']:.1f} | {rate:.0f} | {row['peak_mb']:.0f} "
            f"| {'yes' if row['stored_once'] else 'NO'} | {row['complete']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
