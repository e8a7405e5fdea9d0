"""The user's script and the worker processes: a sweep at a script's top level without the `__main__` guard,
a training function whose globals cannot be pickled. Real scripts, run as processes of their own."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from prefect_hpo import SqlTrialStore, TrialState
from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.executors.runners import ProcessRunner

ROOT = Path(__file__).resolve().parents[2]

UNGUARDED = textwrap.dedent(
    """
    import os, sys, tempfile
    from prefect_hpo import Budget, Float, sweep

    SCRATCH = tempfile.mkdtemp()  # module-level state: another folder wherever the script runs again
    with open(sys.argv[2], "a") as log:
        print("top", os.getpid(), file=log)

    def train(params):
        with open(sys.argv[2], "a") as log:
            print("trial", os.getpid(), file=log)
            if "prefect" in sys.modules:
                print("prefect", os.getpid(), file=log)
        return {"loss": (params["x"] - 0.3) ** 2}

    result = sweep(train, {"x": Float(0, 1)}, "loss", "random", Budget(max_trials=8, max_concurrent=4),
                   storage=sys.argv[1], name="unguarded", show_progress=False)
    print("done", len(result.records))
    """
)
UNGUARDED_FLOW = textwrap.dedent(  # the same sweep in a Prefect pipeline flow called at the top level
    """
    import os, sys
    from prefect import flow
    from prefect_hpo import Budget, Float, sweep

    with open(sys.argv[2], "a") as log:
        print("top", os.getpid(), file=log)

    def train(params):
        with open(sys.argv[2], "a") as log:
            print("trial", os.getpid(), file=log)
        return {"loss": (params["x"] - 0.3) ** 2}

    @flow
    def pipeline():
        with open(sys.argv[2], "a") as log:
            print("flow", os.getpid(), file=log)
        return sweep(train, {"x": Float(0, 1)}, "loss", "random", Budget(max_trials=8, max_concurrent=4),
                     storage=sys.argv[1], name="unguarded", show_progress=False)

    print("done", len(pipeline().records))
    """
)

CACHE = textwrap.dedent(
    """
    import os, sys, threading
    from prefect_hpo import Budget, Float, sweep

    _CACHE = {}  # what a training function keeps between trials of one process: a handle, a lock

    def resource():
        if not _CACHE:
            _CACHE.update(lock=threading.Lock(), pid=os.getpid())
        return _CACHE

    def train(params):
        with resource()["lock"], open(sys.argv[2], "a") as log:
            print(os.getpid(), resource()["pid"], file=log)
        return {"loss": (params["x"] - 0.3) ** 2}

    if __name__ == "__main__":
        resource()  # the parent filled the cache (a sweep with threads, a check) before this sweep
        sweep(train, {"x": Float(0, 1)}, "loss", "random", Budget(max_trials=8, max_concurrent=4),
              storage=sys.argv[1], name="cached", show_progress=False)

        LOCK = threading.Lock()

        def guarded_train(params):  # defined in the guard: the workers never see it, by value or by name
            with LOCK:
                return {"loss": params["x"]}

        sweep(guarded_train, {"x": Float(0, 1)}, "loss", "random", Budget(max_trials=2, max_concurrent=2),
              storage=sys.argv[1], name="in-guard", show_progress=False)
    """
)


def _run_script(tmp_path: Path, source: str, storage: str, log: Path) -> subprocess.CompletedProcess[str]:
    """Run `source` as a script of its own (its own session: its pid is its process group) on Prefect's
    temporary server, with a Prefect home of its own; then check it left no process behind."""
    script = tmp_path / "script.py"
    script.write_text(source)
    home = tmp_path / "prefect-home"
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update(PYTHONPATH=str(ROOT), PREFECT_HOME=str(home), PREFECT_HPO_HOME=str(tmp_path / "hpo"))
    child = subprocess.Popen(
        [sys.executable, str(script), storage, str(log)],
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = child.communicate(timeout=200)
    finally:  # a test that fails (or times out) must not leave the script's processes running either
        if child.poll() is None:
            os.killpg(child.pid, 9)
            child.wait()
        left = _gone_or_killed(child.pid, home)
    assert not left, f"processes left behind after the script ended: {left}\n{err[-3000:]}"
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def _left_behind(group: int, home: Path) -> list[str]:
    """Processes of the script's group, or with its Prefect home (the temporary server has a group of its own)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getpgid(proc.pid) == group or proc.environ().get("PREFECT_HOME") == str(home):
                found.append(f"{proc.pid}: {' '.join(proc.info['cmdline'] or [])[:200]}")
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def _gone_or_killed(group: int, home: Path) -> list[str]:
    """Waits (a minute at most: the fork server ends when it sees its parent gone) until the script's
    processes are gone; those still there then are killed, and returned."""
    deadline = time.monotonic() + 60
    while left := _left_behind(group, home):
        if time.monotonic() > deadline:
            for line in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line.split(":")[0]), 9)
            return left
        time.sleep(0.5)
    return []


@pytest.mark.parametrize("source", [UNGUARDED, UNGUARDED_FLOW], ids=["sweep", "flow"])
def test_a_script_without_the_main_guard_runs_its_sweep_once_and_leaves_nothing_behind(
    tmp_path: Path, source: str
) -> None:
    storage, log = f"sqlite:///{tmp_path / 'hpo.db'}", tmp_path / "pids.log"
    done = _run_script(tmp_path, source, storage, log)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "done 8" in done.stdout
    store = SqlTrialStore(storage)
    try:
        assert store.sweep_names() == ["unguarded"]  # no sweep started again from a worker
        trials = store.trials(store.sweep_id("unguarded"))
    finally:
        store.close()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len([pid for kind, pid in lines if kind == "flow"]) <= 1  # the pipeline flow ran once, if there is one
    ran_script = {pid for kind, pid in lines if kind == "top"}
    ran_trials = {pid for kind, pid in lines if kind == "trial"}
    assert ran_trials and not ran_script & ran_trials  # the workers did not run the script's top level
    if source is UNGUARDED:  # a script that only sweeps: its workers (and their fork server) never import Prefect
        assert not [pid for kind, pid in lines if kind == "prefect"]
    assert "Traceback" not in done.stderr and "ERROR" not in done.stderr  # no crashed run in the fork server


def test_a_cache_the_parent_filled_with_an_unpicklable_object_does_not_stop_process_workers(tmp_path: Path) -> None:
    storage, log = f"sqlite:///{tmp_path / 'hpo.db'}", tmp_path / "pids.log"
    done = _run_script(tmp_path, CACHE, storage, log)
    assert done.returncode == 0, done.stderr[-4000:]
    store = SqlTrialStore(storage)
    try:
        cached = store.trials(store.sweep_id("cached"))
        in_guard = store.trials(store.sweep_id("in-guard"))
    finally:
        store.close()
    assert [t.state for t in cached] == [TrialState.COMPLETE] * 8
    pids = [line.split() for line in log.read_text().splitlines()]
    assert len(pids) == 8 and all(worker == owner for worker, owner in pids)  # each worker filled its own cache
    # A function the workers cannot get at all fails its trials with the reason and the way out.
    assert [t.state for t in in_guard] == [TrialState.FAIL] * 2
    assert all("guarded_train" in (t.error or "") and "workers='threads'" in (t.error or "") for t in in_guard)


def test_a_training_function_that_cannot_be_sent_names_workers_threads(sqlite_url: str) -> None:
    lock = threading.Lock()

    def train(config: dict[str, float]) -> float:  # a closure: neither by value nor by name
        with lock:
            return config["x"]

    with pytest.raises(PrefectHPOError, match=r"cannot be sent to worker processes .*use workers='threads'"):
        ProcessRunner(train, sqlite_url, 1)
