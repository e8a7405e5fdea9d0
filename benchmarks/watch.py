"""What watching work-pool trials costs the sweep's parent, at 10, 100 and 1,000 trials in flight.

    .venv/bin/python -m benchmarks.watch [--in-flight 10 100 1000] [--seconds 20] [--per-trial-up-to 100]

This machine cannot host a thousand worker processes, so the fleet is simulated, honestly for the side being
measured: the parent is real (one `PoolWatch` and one waiting thread per trial, as a sweep's trial tasks are,
against a real `prefect server start` and a real SQLite store), the trials' flow runs are real flow runs on
that server (made and set Running through the API, as a worker would), and a separate "fleet" process writes
what the trials' flow runs would write to the store: every trial's heartbeat every 2 s, and the end of one
trial in ten, at random times, with the moment it wrote it.

Cases, each with N trials in flight for `--seconds`:
- `one watcher`: `PoolWatch` at the default 0.5 s tick;
- `runners`: the same watcher in runner mode (`WorkPoolExecutor(runners=N)`): each trial an `OfferedJob` (offered
  in the store, claimed: it has heartbeats), read from the store alone; the runners' own flow runs (N of
  them, read every 5 s) are not simulated;
- `a watcher per trial`: what the parent did before (a thread per trial reading its flow run's state and its
  heartbeat every 0.5 s; here it reads the trial's end from the store, as the simulated fleet ends no flow
  run: one request and two queries a poll, as before), up to `--per-trial-up-to` trials in flight (beyond,
  it would measure only the server's collapse on 2 cores).

Printed per case: the parent's CPU (cores, from its process CPU time over the window), its resident memory,
requests a second to the Prefect server, store queries a second, and the median and worst time from a
trial's end written by the fleet to the parent having it (its job ended with the record).
Targets (issue 18): the parent under half a core and end-to-seen under 1 s at 1,000 in flight.
"""

from __future__ import annotations

import argparse
import contextvars
import multiprocessing
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from benchmarks.dispatch import _start, _wait_for

ROOT = Path(__file__).resolve().parents[1]
BEAT = 2.0  # the trials' heartbeat_interval
ENDING = 0.1  # the share of trials that end during the window


def fleet(url: str, ids: Sequence[int], seconds: float, ends: dict[int, float], go: Any, seed: int) -> None:
    """The simulated workers: heartbeats for every trial every BEAT seconds (one UPDATE for all: the cost being
    measured is the parent's, not the fleet's), and one trial in ten ended at a random moment, its end time
    written to `ends`."""
    from sqlalchemy import update

    from prefect_hpo import SqlTrialStore
    from prefect_hpo.records import Outcome, TrialState
    from prefect_hpo.store import schema

    store = SqlTrialStore(url)
    rng = random.Random(seed)
    ending = sorted(
        (rng.uniform(1.0, seconds - 1.0), trial_id)
        for trial_id in rng.sample(list(ids), max(1, int(len(ids) * ENDING)))
    )
    go.wait()
    start = time.monotonic()
    next_beat = 0.0
    while True:
        now = time.monotonic() - start
        if now >= seconds:
            break
        if now >= next_beat:
            with store.database.write() as conn:
                conn.execute(
                    update(schema.trials).where(schema.trials.c.id.in_(list(ids))).values(heartbeat_at=time.time())
                )
            next_beat += BEAT
        while ending and ending[0][0] <= now:
            _, trial_id = ending.pop(0)
            store.finish_trial(trial_id, Outcome(TrialState.COMPLETE, values=(0.0,)))
            ends[trial_id] = time.time()
        time.sleep(0.01)
    store.close()


class Counting:
    """Prefect's client, counting requests."""

    def __init__(self, client: Any) -> None:
        self.client, self.requests = client, 0

    def read_flow_runs(self, **kwargs: Any) -> Any:
        self.requests += 1
        return self.client.read_flow_runs(**kwargs)

    def set_flow_run_state(self, *args: Any, **kwargs: Any) -> Any:
        self.requests += 1
        return self.client.set_flow_run_state(*args, **kwargs)


class CountingStore:
    def __init__(self, store: Any) -> None:
        self.store, self.queries = store, 0

    def pulses(self, trial_ids: Sequence[int]) -> Any:
        self.queries += 1
        return self.store.pulses(trial_ids)


def run_case(case: str, in_flight: int, seconds: float, api: str, workdir: Path, seed: int) -> dict[str, float]:
    import contextlib

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Running

    from prefect_hpo import SqlTrialStore, WorkPoolExecutor
    from prefect_hpo.executors.base import EndedTrials, TrialHandle
    from prefect_hpo.executors.pool_watch import PoolWatch
    from prefect_hpo.executors.runner_pool import OfferedJob
    from prefect_hpo.executors.workpool import WorkPoolJob
    from prefect_hpo.objective import Objective
    from prefect_hpo.trial import TrialSpec

    @flow(name="bench-watched")
    def watched() -> None:
        """Never run: the flow the simulated trials' flow runs belong to."""

    url = f"sqlite:///{workdir / f'{case.split()[0]}-{in_flight}.db'}"
    store = SqlTrialStore(url)
    objectives = (Objective("loss"),)
    sid = store.open_sweep("watch", space={}, objectives=[o.to_dict() for o in objectives], strategy="-", budget={})
    # the defaults: 0.5 s ticks (0.1 s with runners), 15 s heartbeat timeout
    settings = WorkPoolExecutor(runners=4) if case == "runners" else WorkPoolExecutor()
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        records, runs = [], []
        for number in range(in_flight):
            records.append(store.create_trial(sid, number, {"i": number}, f"h{number}"))
            run = client.create_flow_run(watched, name=f"watch-{case.split()[0]}-{in_flight}-{number}")
            client.set_flow_run_state(run.id, Running(), force=True)
            runs.append(str(run.id))
        ids = [r.id for r in records]
        manager = multiprocessing.Manager()
        ends: Any = manager.dict()
        go = manager.Event()
        fleet_proc = multiprocessing.get_context("spawn").Process(
            target=fleet, args=(url, ids, seconds, ends, go, seed), daemon=True
        )
        fleet_proc.start()
        seen: dict[int, float] = {}
        counting = Counting(client)
        stores = CountingStore(store)
        stop = threading.Event()
        threads: list[threading.Thread] = []
        if case == "one watcher":
            watch = PoolWatch(
                stores,
                settings.watch_interval,
                settings.heartbeat_timeout,
                client=lambda: contextlib.nullcontext(counting),
            )
            jobs = []
            for record, run_id in zip(records, runs, strict=True):
                spec = TrialSpec(record.id, record.number, "watch", record.config, objectives, None, True, sweep_id=sid)
                job = WorkPoolJob(spec, {}, "cpu", store, settings, None, "uid", watch)
                jobs.append(job)

                def follow(job: WorkPoolJob = job, run_id: str = run_id) -> None:
                    with contextlib.suppress(RuntimeError):  # still in flight when the window closes
                        job.follow(run_id, time.time())
                        seen[job.trial_id] = time.time()

                threads.append(threading.Thread(target=contextvars.copy_context().run, args=(follow,), daemon=True))
        elif case == "runners":
            watch = PoolWatch(
                stores,
                settings.watch_interval,
                settings.heartbeat_timeout,
                client=lambda: contextlib.nullcontext(counting),
            )
            ended_trials = EndedTrials()
            for record in records:
                spec = TrialSpec(record.id, record.number, "watch", record.config, objectives, None, True, sweep_id=sid)
                store.offer(sid, record.id, 1, "cpu", 0, {})
                handle = TrialHandle(record=record, spec=spec, started=time.time())
                watch.add(
                    OfferedJob(
                        handle,
                        "cpu",
                        store,
                        settings,
                        None,
                        ended_trials,
                        lambda job: seen.__setitem__(job.trial_id, time.time()),
                        lambda _run: None,
                    )
                )
        else:  # the parent before: each trial's own thread reads its flow run and its heartbeat every 0.5 s
            watch = None

            def poll(trial_id: int, run_id: str) -> None:
                with get_client(sync_client=True) as own:
                    while not stop.is_set():
                        own.read_flow_run(UUID(run_id))
                        counting.requests += 1
                        stores.queries += 1
                        store.heartbeat(trial_id)
                        stores.queries += 1
                        # its end read from the store, where the old parent saw its flow run end: the same
                        # request a poll either way (the simulated fleet does not end flow runs)
                        if store.pulses([trial_id])[trial_id].state.value != "RUNNING":
                            seen[trial_id] = time.time()
                            return
                        stop.wait(settings.watch_interval)

            for trial_id, run_id in zip(ids, runs, strict=True):
                threads.append(
                    threading.Thread(target=contextvars.copy_context().run, args=(poll, trial_id, run_id), daemon=True)
                )
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # every watcher started before the window opens
        requests0, queries0 = counting.requests, stores.queries
        cpu0, wall0 = time.process_time(), time.monotonic()
        go.set()
        fleet_proc.join(seconds + 60)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        requests, queries = counting.requests - requests0, stores.queries - queries0
        stop.set()
        if watch is not None:
            watch.close()
        for thread in threads:
            thread.join(timeout=30)
        ended = dict(ends)
        manager.shutdown()
    store.close()
    lags = [seen[i] - t for i, t in ended.items() if i in seen]
    missed = len([i for i in ended if i not in seen])
    return {
        "cores": cpu / wall,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "requests_s": requests / wall,
        "queries_s": queries / wall,
        "lag_median": statistics.median(lags) if lags else float("nan"),
        "lag_max": max(lags) if lags else float("nan"),
        "ended": float(len(ended)),
        "missed": float(missed),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--in-flight", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--per-trial-up-to", type=int, default=100)
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["one watcher", "runners", "a watcher per trial"],
        choices=["one watcher", "runners", "a watcher per trial"],
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hpo-watch-") as tmp:
        workdir = Path(tmp)
        port = 4300 + os.getpid() % 500
        api = f"http://127.0.0.1:{port}/api"
        env = dict(os.environ, PREFECT_HOME=str(workdir / "home"), PREFECT_SERVER_API_PORT=str(port))
        server = _start(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env,
            workdir / "server.log",
        )
        try:
            _wait_for(api, server)
            rows = []
            for n in args.in_flight:
                for case in args.cases:
                    if case == "a watcher per trial" and n > args.per_trial_up_to:
                        continue
                    # each case in a process of its own: its CPU time, memory and threads are its alone
                    row = _in_subprocess(case, n, args.seconds, api, workdir, args.seed)
                    rows.append((case, n, row))
                    print(f"# {case}, {n} in flight: {row}", flush=True)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    print()
    print(
        "| in flight | case | parent CPU (cores) | parent RSS MB | requests/s to Prefect | store queries/s "
        "| end -> seen median s | worst s | ends seen |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for case, n, row in rows:
        cells = [
            f"{n}",
            case,
            f"{row['cores']:.2f}",
            f"{row['rss_mb']:.0f}",
            f"{row['requests_s']:.1f}",
            f"{row['queries_s']:.1f}",
            f"{row['lag_median']:.2f}",
            f"{row['lag_max']:.2f}",
            f"{row['ended'] - row['missed']:.0f}/{row['ended']:.0f}",
        ]
        print("| " + " | ".join(cells) + " |")


def _in_subprocess(case: str, n: int, seconds: float, api: str, workdir: Path, seed: int) -> dict[str, float]:
    """`run_case` in a fresh interpreter (it starts processes of its own: the fleet, a manager)."""
    import json

    code = (
        "import json, sys; from pathlib import Path; from benchmarks.watch import run_case; "
        f"print('RESULT', json.dumps(run_case({case!r}, {n}, {seconds}, {api!r}, Path({str(workdir)!r}), {seed})))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    raise RuntimeError(f"case {case!r} at {n} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


if __name__ == "__main__":
    main()
