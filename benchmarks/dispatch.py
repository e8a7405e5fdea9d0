"""Dispatch overhead on a work pool: prefect_hpo against a bare `run_deployment` loop, from one run.

    .venv/bin/python -m benchmarks.dispatch [--trials 8] [--seconds 5] [--rounds 3] [--cases bare runs runners]

Starts `prefect server start` on a free loopback port and two process workers (`--limit 2`
each: 2 workers x 2 slots), with PREFECT_WORKER_QUERY_SECONDS=1 and
PREFECT_WORKER_PREFETCH_SECONDS=0. Each trial sleeps `--seconds`. Printed per case: wall
time from the first launch to the last end seen by the launcher, slot utilization
(trials x seconds / (wall x 4 slots)), the median delay from launch to the trial's start
(prefect_hpo: trial created -> its first report; bare: flow run created -> running), and the
median delay from a trial's flow run ending to the launcher seeing it (prefect_hpo: to its
trial task ending, the slot then free; bare: to run_deployment returning). The bare case runs
the same sleeping flow through `run_deployment` from 4 threads, with no prefect_hpo in it.
Target (issue 4): prefect_hpo's utilization at least 90% of the bare loop's.

`runners` is prefect_hpo with `WorkPoolExecutor(runners=4)`: four long-lived runner flow runs take the
trials one after another (issue 18; targets: at least 90% utilization for 5 s trials, 75% for 0.5 s).
There, launch -> start is from the trial's creation to its first report, and end -> seen from the end its
runner recorded to the parent's loop hearing of it (`on_trial_complete`). Its window starts at the first
trial's creation, so the runners' own start (a flow run and a Python process each, once per sweep) is in
it; "steady" leaves it out: from the first trial's start to the last end seen.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextvars
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

ROOT = Path(__file__).resolve().parents[1]
SLOTS = 4


@flow(name="bench-sleep")
def sleep_flow(seconds: float, launched: float) -> dict[str, float]:
    """The bare case's trial: note when it started, sleep."""
    started = time.time()
    time.sleep(seconds)
    return {"delay": started - launched, "busy": time.time() - started}


def sleeping_trial(config: dict[str, Any], trial: Any) -> float:
    """prefect_hpo's trial: the same sleep, with its start time reported to the store."""
    trial.report(0, started=time.time())
    time.sleep(config["seconds"])
    return 0.0


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT)


def _wait_for(url: str, proc: subprocess.Popen[bytes]) -> None:
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("prefect server exited")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("prefect server did not answer within 120 s")


Row = tuple[float, list[float], list[float], float]  # wall, launch -> start, end -> seen, busy seconds


def bare(trials: int, seconds: float) -> Row:
    def one(_: int) -> tuple[float, float]:
        """Launch -> start of the flow run, and its end -> run_deployment returning, from the run's timestamps."""
        run = run_deployment(
            "bench-sleep/bench-sleep", parameters={"seconds": seconds, "launched": time.time()}, poll_interval=0.5
        )
        seen = time.time()
        assert run.start_time is not None and run.end_time is not None  # type: ignore[union-attr]
        start_delay = (run.start_time - run.created).total_seconds()  # type: ignore[union-attr, operator]
        return start_delay, seen - run.end_time.timestamp()  # type: ignore[union-attr]

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(SLOTS) as pool:
        # Prefect's settings (the server's URL) live in context variables: each thread gets a copy
        futures = [pool.submit(contextvars.copy_context().run, one, i) for i in range(trials)]
        delays = [f.result() for f in futures]
    wall = time.perf_counter() - start
    return wall, [d[0] for d in delays], [d[1] for d in delays], trials * seconds


def with_prefect_hpo(trials: int, seconds: float, storage: str, name: str = "dispatch") -> Row:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from benchmarks.dispatch import sleeping_trial as trial  # under its importable name, not __main__
    from prefect_hpo import Budget, Categorical, SqlTrialStore, WorkPoolExecutor, sweep

    start = time.perf_counter()
    result = sweep(
        trial,
        {"seconds": Categorical([seconds]), "i": Categorical(list(range(trials)))},
        "loss",
        "grid",
        Budget(max_trials=trials, max_concurrent=SLOTS),
        storage=storage,
        name=name,
        executor=WorkPoolExecutor(pool="bench", default_queue="default", poll_interval=0.2),
        show_progress=False,
    )
    wall = time.perf_counter() - start
    store = SqlTrialStore(storage)
    started = {r.number: r.metrics["started"] for r in store.reports(result.records[0].sweep_id)}
    delays = [started[r.number] - r.created_at.timestamp() for r in result.records if r.created_at]  # type: ignore[union-attr]
    store.close()
    # end -> seen: the trial's flow run ending, to the parent's trial task ending (it has then read the
    # trial's end from the store and freed the slot)
    seen: list[float] = []
    last_seen = 0.0
    with get_client(sync_client=True) as client:
        names = [f"{name}-trial-{r.number}-1" for r in result.records]
        runs = {
            r.name: r for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=names)))
        }
        for record in result.records:
            run = runs[f"{name}-trial-{record.number}-1"]
            task_run = client.read_task_run(record.task_run_id)  # type: ignore[arg-type]
            if run.end_time is not None and task_run.end_time is not None:
                seen.append((task_run.end_time - run.end_time).total_seconds())
                last_seen = max(last_seen, task_run.end_time.timestamp())
    busy = trials * seconds  # as in the bare case: the work asked for, not its measured duration
    # The slots' window, as in the bare case: first launch to the last end seen by the launcher. The sweep
    # flow's own start (its flow run, the store) and its end (artifacts, plots) lie outside it; `sweep_wall`
    # has them.
    first_launch = min(r.created_at.timestamp() for r in result.records if r.created_at)
    print(f"prefect_hpo sweep() took {wall:.1f} s in all, {last_seen - first_launch:.1f} s of it dispatching trials")
    return last_seen - first_launch, delays, seen, busy


def with_runners(trials: int, seconds: float, storage: str, name: str) -> Row:
    """prefect_hpo with 4 runners; the window from the first trial's creation to the last end the loop heard."""
    from benchmarks.dispatch import sleeping_trial as trial  # under its importable name, not __main__
    from prefect_hpo import Budget, Categorical, SqlTrialStore, WorkPoolExecutor, sweep

    heard: dict[int, float] = {}
    result = sweep(
        trial,
        {"seconds": Categorical([seconds]), "i": Categorical(list(range(trials)))},
        "loss",
        "grid",
        Budget(max_trials=trials, max_concurrent=SLOTS),
        storage=storage,
        name=name,
        executor=WorkPoolExecutor(pool="bench", default_queue="default", runners=SLOTS),
        show_progress=False,
        on_trial_complete=lambda number, *_: heard.__setitem__(number, time.time()),
    )
    store = SqlTrialStore(storage)
    started = {r.number: r.metrics["started"] for r in store.reports(result.records[0].sweep_id)}
    store.close()
    created = {r.number: r.created_at.timestamp() for r in result.records if r.created_at}
    ended = {r.number: r.finished_at.timestamp() for r in result.records if r.finished_at}
    delays = [started[n] - created[n] for n in started]
    seen = [heard[n] - ended[n] for n in heard if n in ended]
    first, last = min(created.values()), max(heard.values())
    # steady: from the moment every slot has run a trial (all runners up) to the last end the loop heard,
    # counting the part of each trial's sleep inside that window
    up = sorted(started.values())[SLOTS - 1]
    inside = sum(max(0.0, min(ended[n], last) - max(started[n], up)) for n in started if n in ended)
    steady = inside / ((last - up) * SLOTS)
    print(f"{name}: steady utilization (all {SLOTS} runners up at {up - first:.1f} s -> last end seen) {steady:.0%}")
    if os.environ.get("DISPATCH_TIMELINE"):
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=f"{name}-runner-")))
            for run in sorted(runs, key=lambda r: r.created or 0):
                print(
                    f"  {run.name}: created {run.created.timestamp() - first:6.2f} "  # type: ignore[union-attr]
                    f"running {run.start_time.timestamp() - first if run.start_time else float('nan'):6.2f}"
                )
        for n in sorted(created):
            print(
                f"  trial {n}: created {created[n] - first:6.2f} started {started.get(n, 0) - first:6.2f} "
                f"ended {ended.get(n, 0) - first:6.2f} heard {heard.get(n, 0) - first:6.2f}"
            )
    return last - first, delays, seen, trials * seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each case, alternating")
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["bare", "runs", "runners"],
        choices=["bare", "runs", "runners"],
        help="bare run_deployment loop; prefect_hpo, a flow run per trial; prefect_hpo with 4 runners",
    )
    args = parser.parse_args()
    prefect = str(Path(sys.executable).with_name("prefect"))
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        port = 4300 + os.getpid() % 500
        url = f"http://127.0.0.1:{port}/api"
        env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        env.pop("PREFECT_API_URL", None)
        server = _start([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, home / "s.log")
        workers: list[subprocess.Popen[bytes]] = []
        try:
            _wait_for(url, server)
            with temporary_settings({PREFECT_API_URL: url}):
                from prefect_hpo.deploy import deploy_trial_flow, ensure_work_pool

                ensure_work_pool("bench", {"default": None})
                deploy_trial_flow(ROOT, pool="bench", default_queue="default")
                sleep_deploy = flow.from_source(source=str(ROOT), entrypoint="benchmarks/dispatch.py:sleep_flow")
                sleep_deploy.deploy(  # type: ignore[union-attr]
                    name="bench-sleep", work_pool_name="bench", build=False, push=False, print_next_steps=False
                )
                wenv = dict(
                    env, PREFECT_API_URL=url, PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="0"
                )
                for i in range(2):
                    cmd = [prefect, "worker", "start", "--pool", "bench", "--limit", "2", "--name", f"w{i}"]
                    workers.append(_start(cmd, wenv, home / f"w{i}.log"))
                time.sleep(5)  # let both workers register before the first launch (start-up, not measured)
                rows = []
                for round_ in range(1, args.rounds + 1):  # alternate the cases: the machine's noise hits all
                    if "bare" in args.cases:
                        rows.append((f"bare run_deployment loop, round {round_}", *bare(args.trials, args.seconds)))
                    if "runs" in args.cases:
                        storage = f"sqlite:///{home}/hpo-{round_}.db"
                        rows.append(
                            (
                                f"prefect_hpo WorkPoolExecutor, round {round_}",
                                *with_prefect_hpo(args.trials, args.seconds, storage, f"dispatch-{round_}"),
                            )
                        )
                    if "runners" in args.cases:
                        storage = f"sqlite:///{home}/runners-{round_}.db"
                        rows.append(
                            (
                                f"runners WorkPoolExecutor(runners=4), round {round_}",
                                *with_runners(args.trials, args.seconds, storage, f"runners-{round_}"),
                            )
                        )
        finally:
            for proc in [*workers, server]:
                proc.terminate()
                proc.wait(timeout=30)
            if os.environ.get("DISPATCH_TIMELINE"):  # keep the workers' output (their flow runs' logs) to read
                import shutil

                for log in home.glob("*.log"):
                    shutil.copy(log, Path(tempfile.gettempdir()) / f"dispatch-{log.name}")
    print(f"{args.trials} trials of {args.seconds:g} s, 2 workers x 2 slots, {os.cpu_count()} cores\n")
    print("| case | wall s | utilization | median launch -> start s | median end -> seen s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    uses: dict[str, list[float]] = {"bare": [], "prefect_hpo": [], "runners": []}
    for name, wall, delays, seen, busy in rows:
        use = busy / (wall * SLOTS)
        uses[name.split()[0]].append(use)
        print(
            f"| {name} | {wall:.1f} | {use:.0%} | {statistics.median(delays):.2f} "
            f"| {statistics.median(seen) if seen else float('nan'):.2f} |"
        )
    medians = {case: statistics.median(values) for case, values in uses.items() if values}
    print("\nmedian utilization: " + ", ".join(f"{case} {use:.0%}" for case, use in medians.items()))


if __name__ == "__main__":
    main()
