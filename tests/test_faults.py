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

import psutil
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from prefect_hpo import Budget, Categorical, Float, SqlTrialStore, TrialState, start_sweep, sweep
from prefect_hpo.errors import StoreError
from prefect_hpo.records import TrialRecord
from tests.conftest import PG_ADMIN_URL, pg_admin
from tests.fault_train import STEPS, bowl, chatty, cut_off, dies, handed_over, hoarder
from tests.processes import left_behind

ROOT = Path(__file__).resolve().parents[1]
KILLS = 20
MAX_TRIALS = 48
SLOTS = 4
#: The parent is killed once it holds the sweep and this many more reports are stored (0-8: a trial in
#: flight, on 4 slots, is cut off by one kill after another, before and after its worker starts).
MORE_REPORTS = (0, 8)
#: How many parents wait, imported, for their turn.
AHEAD = 2
#: How long the sweep's processes (fork server, trial workers) may outlive a killed parent.
LEFT_BEHIND_S = 3.0
#: In the environment of every process a killed parent started, and of no other: how its leftovers are found.
MARKER = "PREFECT_HPO_FAULT_PARENT"

PARENT = textwrap.dedent(
    """
    import sys
    from prefect_hpo import Budget, Float, sweep
    from tests.fault_train import bowl
    sys.stdin.readline()  # imported (seconds) beside the parent before it; the test says when to go on
    sweep(bowl, {"x": Float(0.0, 1.0), "y": Float(0.0, 1.0), "log": sys.argv[2]}, "loss", "random",
          Budget(max_trials=int(sys.argv[3]), max_concurrent=int(sys.argv[4])), storage=sys.argv[1],
          name="killed", seed=7, workers="processes", show_progress=False, artifact_interval=None)
    """
)


def _bowl_sweep(storage: str, log: Path) -> Any:
    return sweep(
        bowl,
        {"x": Float(0.0, 1.0), "y": Float(0.0, 1.0), "log": str(log)},
        "loss",
        "random",
        Budget(max_trials=MAX_TRIALS, max_concurrent=SLOTS),
        storage=storage,
        name="killed",
        seed=7,
        workers="processes",
        show_progress=False,
        artifact_interval=None,
    )


def _finished(store: SqlTrialStore, sid: int) -> int:
    return sum(r.state.is_finished for r in store.trials(sid))


def _left_behind(marker: str) -> list[str]:
    """The processes carrying `marker` still alive LEFT_BEHIND_S from now (returns as soon as none is): pid
    and command line each. They are then killed, so that a failing test leaves nothing running either."""
    left = []
    for proc in left_behind(MARKER, marker, within=LEFT_BEHIND_S):
        with contextlib.suppress(psutil.Error):
            left.append(f"{proc.pid}: {' '.join(proc.cmdline())[:200]}")
            proc.kill()
    return left


class _Parent:
    """A sweep's parent process: Python with `args` (a script that may wait for a line on its stdin before
    its sweep), its every process marked by a marker of its own in the environment."""

    def __init__(self, args: list[str], env: dict[str, str], err: Path) -> None:
        self.marker = uuid.uuid4().hex
        self.err = err
        self.process = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env={**env, MARKER: self.marker, "PYTHONPATH": str(ROOT)},
            start_new_session=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=open(err, "ab"),  # noqa: SIM115 - the child owns it
        )

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.close()

    def kill(self) -> list[str]:
        """SIGKILL the parent, it alone; the processes it started still alive LEFT_BEHIND_S later."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        return _left_behind(self.marker)

    def holds(self, store: SqlTrialStore, name: str) -> int | None:
        """The sweep's id once this parent holds it, else None."""
        if name not in store.sweep_names():
            return None
        sid = store.sweep_id(name)
        return sid if f":{self.process.pid}:" in str(store.sweep(sid)["owner"]) else None

    def output(self) -> str:
        return self.err.read_text()[-3000:]


def _reports(engine: Engine, sweep_id: int) -> int:
    """How many reports the sweep's trials have stored (a count: reading them all, 100 times a second, took
    a good part of a core that the parents need)."""
    with engine.connect() as conn:
        return int(
            conn.execute(text("SELECT count(*) FROM hpo_reports WHERE sweep_id = :s"), {"s": sweep_id}).scalar_one()
        )


def _kill_at_a_random_point(parent: _Parent, storage: str, rng: random.Random) -> tuple[bool, list[str]]:
    """Let the parent go on with the sweep and SIGKILL it (it alone) once it holds the sweep and 0-8 more
    reports are stored. Returns whether it was killed (False: it ended on its own first) and the processes
    it started that were still alive LEFT_BEHIND_S after its death."""
    store, engine = SqlTrialStore(storage), create_engine(storage)
    more = rng.randint(*MORE_REPORTS)
    parent.go()
    try:
        deadline = time.monotonic() + 120
        sid, target = None, None
        while parent.process.poll() is None:
            assert time.monotonic() < deadline, f"the parent made no progress: {parent.output()}"
            if target is None and (sid := parent.holds(store, "killed")) is not None:
                target = _reports(engine, sid) + more
            if target is not None and _reports(engine, sid) >= target:  # type: ignore[arg-type]
                break
            time.sleep(0.02)  # a poll of the store: 50 a second leave the parents (2 cores) their CPU
    finally:
        killed = parent.process.poll() is None
        left = parent.kill()
        store.close()
        engine.dispose()
    assert killed or parent.process.returncode == 0, parent.output()
    return killed, left


def _xy(record: TrialRecord) -> tuple[float, float]:
    return record.config["x"], record.config["y"]


def _by_number(records: list[TrialRecord]) -> dict[int, TrialRecord]:
    return {r.number: r for r in records}


@pytest.mark.parametrize("storage", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.timeout(900)  # 20 real parents started and killed: 150-180 s alone, 250-300 s on a loaded machine
def test_twenty_random_kills_of_a_four_slot_parent_lose_repeat_and_fail_nothing(
    storage: str, tmp_path: Path, ui_server: str, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}" if storage == "sqlite" else str(request.getfixturevalue("pg_url"))
    log, err = tmp_path / "finished.log", tmp_path / "parents.err"
    env = {**os.environ, "PREFECT_API_URL": ui_server}
    args = [url, str(log), str(MAX_TRIALS), str(SLOTS)]
    rng = random.Random(20261125)
    runs = []
    # the next parents import Prefect (seconds of CPU each) while one runs
    waiting = [_Parent(["-c", PARENT, *args], env, err) for _ in range(min(KILLS, AHEAD))]
    try:
        for kill in range(KILLS):
            if kill + len(waiting) < KILLS:
                waiting.append(_Parent(["-c", PARENT, *args], env, err))
            runs.append(_kill_at_a_random_point(waiting.pop(0), url, rng))
    finally:
        for parent in waiting:
            parent.kill()
    assert all(killed for killed, _ in runs)  # each parent was killed while the sweep was unfinished
    # the fork server and the trial workers die with their parent, within LEFT_BEHIND_S
    assert [left for _, left in runs if left] == []

    with temporary_settings({PREFECT_API_URL: ui_server}):  # no temporary server of its own to wait for
        interrupted = _by_number(_bowl_sweep(url, log).records)
        straight = _by_number(_bowl_sweep(f"sqlite:///{tmp_path / 'straight.db'}", tmp_path / "straight.log").records)

    assert len(interrupted) == MAX_TRIALS
    # a parent's death costs no trial a retry (max_retries=2 here): none gave up, all completed
    assert {n: (r.state, r.error) for n, r in interrupted.items() if r.state != TrialState.COMPLETE} == {}
    assert len({r.config_hash for r in interrupted.values()}) == MAX_TRIALS  # no configuration twice
    assert max(r.attempt for r in interrupted.values()) > 3  # some trials were cut off more than max_retries+1 times
    # a seeded random sweep proposes the same trials, by number, however often it is killed
    assert {n: _xy(r) for n, r in interrupted.items()} == {n: _xy(r) for n, r in straight.items()}
    assert {n: r.value for n, r in interrupted.items()} == {n: r.value for n, r in straight.items()}
    # every stored result is the one the training function computed (the log is outside the store)
    logged = {}
    for line in log.read_text().splitlines():
        x, y, value = (float(v) for v in line.split())
        assert logged.setdefault((x, y), value) == value
    assert {_xy(r): r.value for r in interrupted.values()} == logged


ONE_TRIAL = textwrap.dedent(
    """
    import sys
    from prefect_hpo import Budget, Categorical, sweep
    from tests import fault_train
    sys.stdin.readline()
    sweep(getattr(fault_train, sys.argv[2]), {"x": Categorical([0.5]), "pids": sys.argv[3]}, "loss", "grid",
          Budget(max_trials=1), storage=sys.argv[1], name="one", workers="processes", max_retries=1,
          show_progress=False, artifact_interval=None)
    """
)


def _one_trial_sweep(storage: str, train: Callable[..., float], pids: Path, api: str) -> Any:
    """ONE_TRIAL's sweep in this process, on the Prefect server at `api`."""
    with temporary_settings({PREFECT_API_URL: api}):
        return sweep(
            train,
            {"x": Categorical([0.5]), "pids": str(pids)},
            "loss",
            "grid",
            Budget(max_trials=1),
            storage=storage,
            name="one",
            workers="processes",
            max_retries=1,
            show_progress=False,
            artifact_interval=None,
        )


def _wait_for_file(folder: Path, prefix: str, parent: _Parent) -> Path:
    """The file whose name starts with `prefix` that the trial leaves in `folder` (waiting for it)."""
    deadline = time.monotonic() + 120
    while not (found := sorted(folder.glob(f"{prefix}*"))):
        assert parent.process.poll() is None and time.monotonic() < deadline, parent.output()
        time.sleep(0.01)
    return found[0]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_parent_deaths_cost_a_trial_no_retry(sqlite_url: str, tmp_path: Path, ui_server: str) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "PREFECT_API_URL": ui_server}
    for attempt in (1, 2):  # each attempt is cut off by the death of the sweep's parent
        parent = _Parent(["-c", ONE_TRIAL, sqlite_url, "cut_off", str(pids)], env, tmp_path / "parent.err")
        parent.go()
        worker = int(_wait_for_file(pids, f"{attempt}.", parent).suffix[1:])
        assert parent.kill() == []  # nothing of the sweep outlives its parent
        assert _gone(worker)
    # the third attempt's process dies: with max_retries=1 it is retried, as a first failure
    [trial] = _one_trial_sweep(sqlite_url, cut_off, pids, ui_server).records
    assert (trial.state, trial.reason, trial.value, trial.attempt) == (TrialState.COMPLETE, None, 0.5, 4)
    assert trial.failures == 1


def test_a_trial_worker_busy_in_c_code_dies_with_the_parent(sqlite_url: str, tmp_path: Path, ui_server: str) -> None:
    """A worker whose training holds the GIL (C code) cannot run a thread that watches its parent: the kernel
    must end it."""
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "PREFECT_API_URL": ui_server}
    parent = _Parent(["-c", ONE_TRIAL, sqlite_url, "busy_in_c", str(pids)], env, tmp_path / "parent.err")
    parent.go()
    worker = int(_wait_for_file(pids, "busy.", parent).suffix[1:])
    assert parent.kill() == []
    assert _gone(worker)


SLOW_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from prefect_hpo import Budget, Categorical, sweep
    from tests.fault_train import bowl
    # Top-level work before the sweep (a data set loaded, say) runs again in the fork server, which loads the
    # script for its workers: there it takes longer than the test lasts.
    if Path(sys.argv[2], "parent").exists():
        Path(sys.argv[2], "fork-server").touch()
        time.sleep(120)
    Path(sys.argv[2], "parent").touch()
    sweep(bowl, {"x": Categorical([0.5]), "y": 0.5, "log": sys.argv[2] + "/log"}, "loss", "grid", Budget(max_trials=1),
          storage=sys.argv[1], name="slow", show_progress=False, artifact_interval=None)
    """
)


def test_a_fork_server_still_loading_the_script_dies_with_the_parent(
    sqlite_url: str, tmp_path: Path, ui_server: str
) -> None:
    script = tmp_path / "slow_script.py"
    script.write_text(SLOW_SCRIPT)
    env = {**os.environ, "PREFECT_API_URL": ui_server}
    parent = _Parent([str(script), sqlite_url, str(tmp_path)], env, tmp_path / "parent.err")
    parent.go()
    _wait_for_file(tmp_path, "fork-server", parent)
    assert parent.kill() == []


def test_a_result_the_worker_stored_is_kept_when_the_parent_dies_before_hearing_of_it(
    sqlite_url: str, tmp_path: Path, ui_server: str
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    os.mkfifo(pids / "go")
    env = {**os.environ, "PREFECT_API_URL": ui_server}
    parent = _Parent(["-c", ONE_TRIAL, sqlite_url, "handed_over", str(pids)], env, tmp_path / "parent.err")
    parent.go()
    try:
        _wait_for_file(pids, "ready.", parent)
        os.kill(parent.process.pid, signal.SIGSTOP)  # the parent can hear of nothing from now on
        with open(pids / "go", "w") as go:  # the trial finishes
            go.write("go")
        store = SqlTrialStore(sqlite_url)
        deadline = time.monotonic() + 30
        while (trial := store.trial(store.sweep_id("one"), 0)).state == TrialState.RUNNING:
            assert time.monotonic() < deadline, "the trial's end was not stored while its parent was stopped"
            time.sleep(0.02)
        store.close()
        assert (trial.state, trial.value) == (TrialState.COMPLETE, 0.5)
    finally:
        left = parent.kill()
    assert left == []
    [kept] = _one_trial_sweep(sqlite_url, handed_over, pids, ui_server).records
    assert (kept.state, kept.value, kept.attempt) == (TrialState.COMPLETE, 0.5, 1)
    assert (pids / "ran.log").read_text() == "1\n"  # trained once: kept, not run again


@pytest.mark.parametrize("storage", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_trial_processes_killed_while_they_write(storage: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}" if storage == "sqlite" else str(request.getfixturevalue("pg_url"))
    pids = tmp_path / "pids"
    pids.mkdir()
    xs = [float(i) for i in range(1, 7)]
    running = start_sweep(
        chatty,
        {"x": Categorical(xs), "pids": str(pids), "victims": "1.0 3.0 5.0"},
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
            fresh = [p for p in pids.iterdir() if p.suffix != ".ran" and p.name not in seen]
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
    assert {r.value: r.attempt for r in records} == {x: 2 if x % 2 else 1 for x in xs}  # the killed ones ran again
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
    assert dead.reason == "gave up after 2 failed attempts: the worker process died with exit code 3"
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
