"""Start-up time: what a short sweep costs as a whole process, against bare Prefect and Optuna.

    .venv/bin/python benchmarks/startup.py --repeats 3
    .venv/bin/python benchmarks/startup.py --code before=CHECKOUT_BEFORE --code after=. --repeats 3

Cases, each a user's script (`from prefect_hpo import ...` at its top) run in a fresh interpreter; "whole"
cases are timed from outside, interpreter start to exit (to the end of its output: every helper gone):
- `sweep 10 whole`: a script running a 10-trial trivial `sweep()` (random, 2 worker processes, SQLite store);
- `bare Prefect 10 whole`: a script running a Prefect flow that submits 10 no-op task runs;
- `Optuna SQLite 10 whole`: a script running 10 trivial trials of `study.optimize` on a SQLite storage;
- the same three `... server up`: with `PREFECT_API_URL` pointing at a long-running `prefect server start`
  (Prefect's temporary server is not started; Optuna needs no server and is not repeated);
- `sweep 100 in-process`: 100 trivial trials (random, 4 worker processes), timed inside the script from the
  `sweep()` call to its return, with the Prefect server up and a first flow run made; against
  `Optuna SQLite 100 in-process` (timed from `create_study`), and `bare Prefect 100 in-process` (a flow that
  submits 100 no-op task runs on 4 threads, timed the same way: Prefect's own floor for 100 trials that are
  each a task run);
- `first trials, N slots`: a sweep of N trials that each sleep 2 s, with the server already up: seconds from
  the moment a trial is recorded RUNNING to its end, the slowest of the N (2 s of it are the trial's own sleep;
  the rest is waiting for a worker process).

The timed script imports only prefect_hpo at its top, as the README's scripts do; Prefect, for the flow run
made before the clock starts, is imported under its `__main__` guard. The fork server loads a script's top
level (`prefect_hpo.executors.main_script`), so a script that imports Prefect there makes its workers wait
for that import too (1.5 s of CPU here).

Cases run round-robin (every case once, then again), so that the machine's load, which varies over minutes on
a shared machine, falls on all of them alike; the table gives medians. `--code NAME=DIR` runs the prefect_hpo
cases once per checkout (PYTHONPATH=DIR), side by side. After each whole-process case the benchmark looks for
processes the script left behind (by an environment variable only its processes carry) and counts them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

import psutil

HERE = Path(__file__).resolve()
MARKER = "PREFECT_HPO_STARTUP_BENCH"

SWEEP_SCRIPT = """
import sys
from prefect_hpo import Budget, Float, sweep

def trivial(config):
    return float(config["x"])

if __name__ == "__main__":
    budget = Budget(max_trials={trials}, max_concurrent={slots})
    result = sweep(trivial, {{"x": Float(0.0, 1.0)}}, "loss", "random", budget, storage=sys.argv[1], name="startup",
                   show_progress=False)
    assert len(result.records) == {trials}
"""

TIMED_SCRIPT = """
import json
import sys
import time

from prefect_hpo import Budget, Float, sweep


def trivial(config):
    return float(config["x"])


def sleepy(config):
    time.sleep(2.0)
    return float(config["x"])


if __name__ == "__main__":
    from prefect import flow  # under the guard: the fork server loads the script's top (see the docstring)

    storage, trials, slots, train = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    flow(lambda: None, name="warm")()  # Prefect's client (and server, if it starts one) up before the clock starts
    budget = Budget(max_trials=trials, max_concurrent=slots)
    t = time.perf_counter()
    result = sweep({"trivial": trivial, "sleepy": sleepy}[train], {"x": Float(0.0, 1.0)}, "loss", "random", budget,
                   storage=storage, name="startup", show_progress=False)
    seconds = time.perf_counter() - t
    assert len(result.records) == trials
    waits = [r.finished_at.timestamp() - r.started_at.timestamp() for r in result.records]
    print(json.dumps({"seconds": seconds, "first_trials": max(waits)}))
"""

BARE_SCRIPT = """
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

@task
def noop(i):
    return i

@flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
def bare(n):
    for future in [noop.submit(i) for i in range(n)]:
        future.result()

if __name__ == "__main__":
    bare(10)
"""

BARE_TIMED_SCRIPT = """
import json
import sys
import time

from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

@task
def noop(i):
    return float(i)

@flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
def bare(n):
    for future in [noop.submit(i) for i in range(n)]:
        future.result()

if __name__ == "__main__":
    flow(lambda: None, name="warm")()
    t = time.perf_counter()
    bare(100)
    print(json.dumps({"seconds": time.perf_counter() - t}))
"""

OPTUNA_SCRIPT = """
import sys
import optuna

if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), storage=sys.argv[1])
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=10)
"""


def _optuna_in_process(workdir: str) -> dict[str, float]:
    """100 trivial Optuna trials on a SQLite storage, timed from `create_study`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t = time.perf_counter()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), storage=f"sqlite:///{workdir}/optuna.db")
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=100)
    return {"seconds": time.perf_counter() - t}


def _left_behind(marker: str) -> int:
    """Processes still alive that carry this run's marker in their environment (the script's, any child's)."""
    deadline = time.monotonic() + 5.0  # a fork server notices its parent's exit a moment later
    while True:
        alive = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get(MARKER) == marker:
                    alive.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        if not alive or time.monotonic() > deadline:
            return len(alive)
        time.sleep(0.2)


def _run(case: str, code_dir: str | None, env: dict[str, str], workdir: Path) -> dict[str, float]:
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    run_env = dict(env, PREFECT_HPO_HOME=str(run_dir / "home"))
    if code_dir is not None:
        run_env["PYTHONPATH"] = code_dir
    args = []
    if case.startswith("Optuna SQLite 100"):
        cmd = [sys.executable, str(HERE), "--_case", case, "--_workdir", str(run_dir)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=run_env, cwd=run_dir)
        if out.returncode != 0:
            raise RuntimeError(f"{case}: {out.stderr.strip()[-2000:]}")
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))
    if case.startswith("sweep 100"):
        source, storage, args = TIMED_SCRIPT, f"sqlite:///{run_dir}/hpo.db", ["100", "4", "trivial"]
    elif case.startswith("first trials"):
        slots = case.split()[2]
        source, storage, args = TIMED_SCRIPT, f"sqlite:///{run_dir}/hpo.db", [slots, slots, "sleepy"]
    elif case.startswith("sweep 10 "):
        source, storage = SWEEP_SCRIPT.format(trials=10, slots=2), f"sqlite:///{run_dir}/hpo.db"
    elif case.startswith("bare Prefect 100"):
        source, storage, args = BARE_TIMED_SCRIPT, "", ["100"]
    elif case.startswith("bare"):
        source, storage = BARE_SCRIPT, ""
    else:
        source, storage = OPTUNA_SCRIPT, f"sqlite:///{run_dir}/optuna.db"
    script = run_dir / "script.py"
    script.write_text(source)
    marker = uuid.uuid4().hex
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(script), storage, *args],
        capture_output=True,
        text=True,
        env=dict(run_env, **{MARKER: marker}),
        cwd=run_dir,
        start_new_session=True,
    )
    seconds = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"{case}: {out.stderr.strip()[-2000:]}")
    if args:  # timed inside the script
        timed = json.loads(out.stdout.strip().splitlines()[-1])
        seconds = timed["first_trials"] if case.startswith("first trials") else timed["seconds"]
    return {"seconds": seconds, "left": _left_behind(marker)}


def _start_server(home: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=dict(env, PREFECT_HOME=str(home)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("prefect server start did not answer in 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--code",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a prefect_hpo checkout to run (repeatable); default: this one",
    )
    parser.add_argument("--port", type=int, default=4297, help="port of the long-running Prefect server")
    parser.add_argument("--skip", nargs="*", default=[], help="cases to leave out (prefixes)")
    parser.add_argument("--_case", help=argparse.SUPPRESS)
    parser.add_argument("--_workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped benchmark still stops its server
    if args._case:
        print(json.dumps(_optuna_in_process(args._workdir)))
        return

    codes = dict(item.split("=", 1) for item in args.code) or {"this": str(HERE.parents[1])}
    codes = {name: str(Path(path).resolve()) for name, path in codes.items()}
    env = dict(os.environ, PREFECT_LOGGING_LEVEL="WARNING", PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    env.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
    env.pop("PREFECT_API_URL", None)
    workdir = Path(tempfile.mkdtemp(prefix="hpo-startup-"))
    env["PREFECT_HOME"] = str(workdir / "prefect-home")  # the temporary server's database, migrated once below
    up = dict(env, PREFECT_API_URL=f"http://127.0.0.1:{args.port}/api")

    hpo_cases = ["sweep 10 whole", "sweep 10 whole, server up", "sweep 100 in-process"]
    hpo_cases += [f"first trials, {n} slots" for n in (1, 2, 4)]
    peer_cases = [
        "bare Prefect 10 whole",
        "bare Prefect 10 whole, server up",
        "bare Prefect 100 in-process",
        "Optuna SQLite 10 whole",
        "Optuna SQLite 100 in-process",
    ]
    plan = [(case, name) for case in hpo_cases for name in codes] + [(case, None) for case in peer_cases]
    plan = [(case, name) for case, name in plan if not any(case.startswith(s) for s in args.skip)]

    subprocess.run([sys.executable, "-c", BARE_SCRIPT.replace("bare(10)", "bare(1)")], env=env, check=True)
    server = _start_server(workdir / "server-home", args.port, env)
    times: dict[tuple[str, str | None], list[float]] = defaultdict(list)
    left: dict[tuple[str, str | None], int] = defaultdict(int)
    try:
        for repeat in range(args.repeats):
            for case, name in plan:
                case_env = up if ("server up" in case or "in-process" in case or case.startswith("first")) else env
                row = _run(case, codes[name] if name else None, case_env, workdir)
                times[case, name].append(row["seconds"])
                left[case, name] += int(row.get("left", 0))
                print(
                    f"# round {repeat + 1}: {case} [{name or '-'}] {row['seconds']:.2f} s", file=sys.stderr, flush=True
                )
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its own session: the server and what it started
        server.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)

    med = {key: statistics.median(values) for key, values in times.items()}
    references = {
        "sweep 10 whole": "bare Prefect 10 whole",
        "sweep 10 whole, server up": "bare Prefect 10 whole, server up",
        "sweep 100 in-process": "Optuna SQLite 100 in-process",
        "bare Prefect 100 in-process": "Optuna SQLite 100 in-process",
    }
    load = os.getloadavg()
    print(
        f"{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end; "
        f"{args.repeats} rounds, medians\n"
    )
    print("| case | code | median s | runs (s) | against | ratio | processes left |")
    print("| --- | --- | ---: | --- | --- | ---: | ---: |")
    for case, name in plan:
        key = (case, name)
        ref = references.get(case)
        ratio = f"{med[key] / med[ref, None]:.2f}x" if ref and (ref, None) in med else ""
        runs = ", ".join(f"{v:.1f}" for v in times[key])
        left_text = str(left[key]) if not case.startswith("Optuna SQLite 100") else ""
        print(f"| {case} | {name or '-'} | {med[key]:.2f} | {runs} | {ref or ''} | {ratio} | {left_text} |")


if __name__ == "__main__":
    main()
