"""Fault injection with real processes: parents killed at random points, trial processes killed while they
write, a database that goes away for a moment, a disk that fills up.

Each test compares what the store holds afterwards with what an uninterrupted run holds, or with a log
that the training function appends to outside the store.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from prefect_hpo import Budget, Categorical, Float, SqlTrialStore, TrialState, start_sweep, sweep
from prefect_hpo.records import TrialRecord
from tests.fault_train import STEPS, bowl, chatty, dies

ROOT = Path(__file__).resolve().parents[1]
KILLS = 20
MAX_TRIALS = 40

PARENT = textwrap.dedent(
    """
    import sys
    from prefect_hpo import Budget, Float, sweep
    from tests.fault_train import bowl
    sweep(bowl, {"x": Float(0.0, 1.0), "y": Float(0.0, 1.0), "log": sys.argv[2]}, "loss", "random",
          Budget(max_trials=int(sys.argv[3]), max_concurrent=2), storage=sys.argv[1], name="killed", seed=7,
          workers="threads", max_retries=50, show_progress=False)
    """
)


def _bowl_sweep(storage: str, log: Path) -> Any:
    return sweep(
        bowl,
        {"x": Float(0.0, 1.0), "y": Float(0.0, 1.0), "log": str(log)},
        "loss",
        "random",
        Budget(max_trials=MAX_TRIALS, max_concurrent=2),
        storage=storage,
        name="killed",
        seed=7,
        workers="threads",
        max_retries=50,
        show_progress=False,
    )


def _finished(store: SqlTrialStore, sid: int) -> int:
    return sum(r.state.is_finished for r in store.trials(sid))


def _kill_at_a_random_point(storage: str, log: Path, rng: random.Random, err: Path, env: dict[str, str]) -> bool:
    """Start a parent on the sweep and SIGKILL it (with everything it started) once it holds the sweep and
    0-2 more trials have finished, after a further random 0-0.25 s. False if it ended on its own first."""
    child = subprocess.Popen(
        [sys.executable, "-c", PARENT, storage, str(log), str(MAX_TRIALS)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(err, "ab"),  # noqa: SIM115 - the child owns it
    )
    store = SqlTrialStore(storage)
    more, extra = rng.choice([0, 0, 1, 1, 2]), rng.uniform(0.0, 0.25)
    try:
        deadline = time.monotonic() + 120
        sid, target = None, None
        while child.poll() is None:
            assert time.monotonic() < deadline, f"the parent made no progress: {err.read_text()[-3000:]}"
            if sid is None and "killed" in store.sweep_names():
                sid = store.sweep_id("killed")
            if sid is not None and target is None and f":{child.pid}:" in str(store.sweep(sid)["owner"]):
                target = _finished(store, sid) + more  # it holds the sweep now
            if target is not None and _finished(store, sid) >= target:  # type: ignore[arg-type]
                time.sleep(extra)  # the random point itself, not a wait for anything
                break
            time.sleep(0.01)
    finally:
        killed = child.poll() is None
        if killed:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        store.close()
    assert killed or child.returncode == 0, err.read_text()[-3000:]
    return killed


def _xy(record: TrialRecord) -> tuple[float, float]:
    return record.config["x"], record.config["y"]


def _by_number(records: list[TrialRecord]) -> dict[int, TrialRecord]:
    return {r.number: r for r in records}


def test_twenty_random_kills_of_the_parent_lose_and_repeat_nothing(tmp_path: Path, ui_server: str) -> None:
    storage, log = f"sqlite:///{tmp_path / 'hpo.db'}", tmp_path / "finished.log"
    env = {**os.environ, "PREFECT_API_URL": ui_server, "PYTHONPATH": str(ROOT)}
    rng = random.Random(20261125)
    kills = sum(_kill_at_a_random_point(storage, log, rng, tmp_path / "parents.err", env) for _ in range(KILLS))
    assert kills == KILLS  # each parent was killed while the sweep was unfinished

    interrupted = _by_number(_bowl_sweep(storage, log).records)
    straight = _by_number(_bowl_sweep(f"sqlite:///{tmp_path / 'straight.db'}", tmp_path / "straight.log").records)

    assert len(interrupted) == MAX_TRIALS and all(r.state == TrialState.COMPLETE for r in interrupted.values())
    assert len({r.config_hash for r in interrupted.values()}) == MAX_TRIALS  # no configuration twice
    assert any(r.attempt > 1 for r in interrupted.values())  # some trials were cut off and run again
    # a seeded random sweep proposes the same trials, by number, however often it is killed
    assert {n: _xy(r) for n, r in interrupted.items()} == {n: _xy(r) for n, r in straight.items()}
    # every stored result is the one the training function computed (the log is outside the store)
    logged = {}
    for line in log.read_text().splitlines():
        x, y, value = (float(v) for v in line.split())
        assert logged.setdefault((x, y), value) == value
    assert {_xy(r): r.value for r in interrupted.values()} == logged
    best = min(interrupted.values(), key=lambda r: r.value or 0.0)
    assert _xy(best) == _xy(min(straight.values(), key=lambda r: r.value or 0.0))


@pytest.mark.parametrize("storage", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_trial_processes_killed_while_they_write(storage: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}" if storage == "sqlite" else str(request.getfixturevalue("pg_url"))
    pids = tmp_path / "pids"
    pids.mkdir()
    xs = [float(i) for i in range(1, 7)]
    running = start_sweep(
        chatty,
        {"x": Categorical(xs), "pids": str(pids)},
        "m0",
        "grid",
        Budget(max_trials=len(xs), max_concurrent=2),
        url,
        "chatty",
        workers="processes",
        artifact_interval=None,
    )
    rng = random.Random(7)
    killed: set[str] = set()
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 240
        while len(killed) < 3 and running.is_running():
            assert time.monotonic() < deadline
            fresh = [p for p in pids.iterdir() if p.name not in seen]
            if fresh:
                victim = fresh[0]
                seen.add(victim.name)
                time.sleep(rng.uniform(0.05, 0.5))  # a random point in its second of writes
                with contextlib.suppress(ProcessLookupError):  # it may have ended first: no kill then
                    os.kill(int(victim.suffix[1:]), signal.SIGKILL)
                    killed.add(victim.name)
            time.sleep(0.01)
    finally:
        result = running.result()
    records = result.records
    assert len(killed) == 3
    assert len(records) == len(xs) and all(r.state == TrialState.COMPLETE for r in records)
    assert sorted(r.value for r in records) == xs  # type: ignore[type-var]
    assert sum(r.attempt for r in records) >= len(xs) + 3  # the killed ones ran again
    store = SqlTrialStore(url)
    reports = store.reports(store.sweep_id("chatty"))
    store.close()
    assert all(len(r.metrics) == 20 for r in reports)  # no report half written
    for record in records:  # each trial's last run reported every step
        assert {r.step for r in reports if r.number == record.number} == set(range(1, STEPS + 1))
    if storage == "sqlite":
        with sqlite3.connect(tmp_path / "hpo.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_trial_whose_process_always_dies_is_retried_then_failed_and_the_sweep_goes_on(sqlite_url: str) -> None:
    result = sweep(
        dies,
        {"die": Categorical([True, False]), "x": 0.5},
        "loss",
        "grid",
        Budget(max_trials=2, max_concurrent=1),
        storage=sqlite_url,
        workers="processes",
        max_retries=1,
        artifact_interval=None,
    )
    dead, alive = result.records
    assert dead.state == TrialState.FAIL and dead.attempt == 2
    assert dead.error == "the worker process died with exit code 3"
    assert dead.reason == "gave up after 2 attempts: the worker process died with exit code 3"
    assert alive.state == TrialState.COMPLETE and alive.value == 0.5
