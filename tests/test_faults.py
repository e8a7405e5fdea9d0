"""Fault injection with real processes: parents killed at random points, trial processes killed while they
write, a database that goes away for a moment, a disk that fills up.

Each test compares what the store holds afterwards with what an uninterrupted run holds, or with a log
that the training function appends to outside the store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from prefect_hpo import Budget, Categorical, Float, SqlTrialStore, TrialState, start_sweep, sweep
from prefect_hpo.errors import StoreError
from prefect_hpo.records import TrialRecord
from tests.conftest import PG_ADMIN_URL, pg_admin
from tests.fault_train import STEPS, bowl, chatty, dies, hoarder

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


class _Records(logging.Handler):
    """Collects the store's log records (the sweep runs in another thread of this process)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def saw(self, text: str) -> bool:
        return any(text in m for m in self.messages)


@pytest.fixture
def outage_db() -> Iterator[tuple[str, Callable[[bool], None]]]:
    """A PostgreSQL database of its own, with a switch that revokes it (connections refused, open ones
    ended) and gives it back; its URL carries a password (trust auth ignores it) that must never show."""
    name = f"hpo_outage_{uuid.uuid4().hex[:8]}"
    admin = pg_admin(f'CREATE DATABASE "{name}"')

    def available(yes: bool) -> None:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(yes).lower()}'))
            if not yes:
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db"), {"db": name}
                )

    url = make_url(PG_ADMIN_URL).set(database=name, password="s3cret").render_as_string(hide_password=False)
    try:
        yield url, available
    finally:
        available(True)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgres
def test_a_database_that_goes_away_for_a_moment_is_waited_for(
    outage_db: tuple[str, Callable[[bool], None]], tmp_path: Path
) -> None:
    url, available = outage_db
    records = _Records()
    logging.getLogger("prefect_hpo.store").addHandler(records)
    running = start_sweep(
        bowl,
        {"x": Float(0.0, 1.0), "y": Float(0.0, 1.0), "log": str(tmp_path / "finished.log")},
        "loss",
        "random",
        Budget(max_trials=10, max_concurrent=2),
        url,
        "outage",
        seed=3,
        workers="threads",
    )
    try:
        watcher = SqlTrialStore(url)
        deadline = time.monotonic() + 120
        while "outage" not in watcher.sweep_names() or _finished(watcher, watcher.sweep_id("outage")) < 3:
            assert time.monotonic() < deadline and running.is_running()
            time.sleep(0.02)
        before = {r.number: r for r in watcher.trials(watcher.sweep_id("outage")) if r.state.is_finished}
        watcher.close()
        available(False)
        try:
            while not records.saw("does not answer"):  # the sweep has met the outage
                assert time.monotonic() < deadline
                time.sleep(0.02)
        finally:
            available(True)
        result = running.result()
    finally:
        logging.getLogger("prefect_hpo.store").removeHandler(records)
    done = {r.number: r for r in result.records}
    assert len(done) == 10 and all(r.state == TrialState.COMPLETE for r in done.values())
    assert len({r.config_hash for r in done.values()}) == 10
    assert all(done[n].value == r.value and done[n].config == r.config for n, r in before.items())
    assert records.saw("answers again after")
    assert not any("s3cret" in m for m in records.messages)


@pytest.mark.postgres
def test_a_database_gone_for_longer_than_the_outage_timeout_is_a_clear_error(
    outage_db: tuple[str, Callable[[bool], None]],
) -> None:
    url, available = outage_db
    store = SqlTrialStore(url, outage_timeout=1.0)
    sid = store.open_sweep("gone", space={}, objectives=[], strategy="-", budget={})
    available(False)
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        store.trials(sid)
    assert time.monotonic() - started >= 1.0  # it waited before giving up
    message = str(info.value)
    assert "did not answer for 1 s" in message and "run the same sweep again" in message
    assert "s3cret" not in message and "***" in message
    available(True)
    assert store.trials(sid) == []  # and works again once the database is back
    store.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a disk that fills up (mounting needs root, which CI's machine has)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"cannot mount a tmpfs under CI: {mounted.stderr.decode()}")
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_full_disk_stops_the_sweep_with_a_clear_error_and_keeps_what_was_committed(
    small_disk: Path, tmp_path: Path
) -> None:
    url, log = f"sqlite:///{small_disk / 'hpo.db'}", tmp_path / "finished.log"

    def run() -> Any:
        return sweep(
            hoarder,
            {"x": Float(0.0, 1.0), "log": str(log)},
            "loss",
            "random",
            Budget(max_trials=80, max_concurrent=2),
            storage=url,
            name="full",
            seed=1,
            workers="threads",
            artifact_interval=None,
        )

    with pytest.raises(StoreError, match=r"is full \(database or disk is full\).*free space and run the same sweep"):
        run()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    with sqlite3.connect(small_disk / "hpo.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = SqlTrialStore(url)
    before = {r.number: r for r in store.trials(store.sweep_id("full")) if r.state == TrialState.COMPLETE}
    store.close()
    assert before  # some trials finished before the disk filled
    logged = dict(tuple(float(v) for v in line.split()) for line in log.read_text().splitlines())
    assert all(logged[r.config["x"]] == r.value for r in before.values())  # what was committed is intact

    done = {r.number: r for r in run().records}  # space again: the same sweep continues
    assert len(done) == 80 and all(r.state == TrialState.COMPLETE for r in done.values())
    assert all(done[n].value == r.value and done[n].attempt == r.attempt for n, r in before.items())
