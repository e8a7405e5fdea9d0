"""Ctrl-C and SIGTERM on a running sweep: real signals on real processes, 4 slots, SQLite and PostgreSQL.

The first signal stops the sweep cleanly (running trials INTERRUPTED, the flow run Cancelled, one line
saying how to continue, the process gone with nothing of its group left); a second exits at once; the
same call continues the sweep, running each interrupted trial again from where it stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client

from prefect_hpo import Budget, Categorical, SqlTrialStore, TrialState, sweep
from prefect_hpo.interrupts import Interrupts
from prefect_hpo.result import SweepResult
from tests.interrupt_train import steady
from tests.processes import group_left

ROOT = Path(__file__).resolve().parents[1]
SLOTS = 4
VALUES = [i / 10 for i in range(12)]

CHILD = (
    textwrap.dedent(
        """
    import sys
    from prefect_hpo import Budget, Categorical, sweep
    from tests.interrupt_train import steady

    if __name__ == "__main__":
        sweep(steady, {"x": Categorical(VALUES), "log": sys.argv[2]}, "loss", "grid",
              Budget(max_trials=12, max_concurrent=SLOTS), storage=sys.argv[1], name="interrupted",
              workers=sys.argv[3])
    """
    )
    .replace("VALUES", repr(VALUES))
    .replace("SLOTS", str(SLOTS))
)


class Child:
    """A sweep in a process (and process group) of its own, as a person's terminal runs a script."""

    def __init__(self, storage: str, tmp_path: Path, workers: str) -> None:
        self.storage, self.log, self.output = storage, tmp_path / "starts.log", tmp_path / "child.out"
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, storage, str(self.log), workers],
            cwd=ROOT,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=open(self.output, "wb"),  # noqa: SIM115 - the child owns it
            stderr=subprocess.STDOUT,
            env={**os.environ, "PREFECT_LOGGING_LEVEL": "INFO"},  # every line a person would read
        )

    def wait_until_trials_run(self, store: SqlTrialStore) -> list[int]:
        """The numbers of the trials running (all slots busy, each past its second step) once they are."""
        deadline = time.monotonic() + 240
        while True:
            assert self.process.poll() is None, self.text()[-3000:]
            assert time.monotonic() < deadline, "the child sweep did not fill its slots"
            if "interrupted" in store.sweep_names():
                running = store.trials(store.sweep_id("interrupted"), [TrialState.RUNNING])
                if len(running) == SLOTS and all((r.last_step or 0) >= 2 for r in running):
                    return sorted(r.number for r in running)
            time.sleep(0.05)

    def signal(self, signum: int, group: bool = True) -> None:
        """A terminal's Ctrl-C reaches the whole process group; a container stop only the process."""
        (os.killpg if group else os.kill)(self.process.pid, signum)

    def wait(self) -> int:
        return self.process.wait(timeout=120)  # a hang fails here

    def continue_here(self, workers: str) -> SweepResult:
        """The child's sweep call, run again in this process: it continues the interrupted sweep."""
        space = {"x": Categorical(VALUES), "log": str(self.log)}
        budget = Budget(max_trials=12, max_concurrent=SLOTS)
        return sweep(steady, space, "loss", "grid", budget, storage=self.storage, name="interrupted", workers=workers)

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def group_left(self, within: float = 60) -> list[str]:
        """What still runs in the child's process group `within` seconds after it ended."""
        return group_left(self.process.pid, within)


@pytest.fixture
def child_storage(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[str]:
    yield sqlite_url if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


def _flow_run_state(store: SqlTrialStore) -> str:
    run_id = store.sweep(store.sweep_id("interrupted"))["flow_run_id"]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
    assert run.state is not None
    return str(run.state.type.value)


@pytest.mark.parametrize(
    ("child_storage", "workers", "signum", "group"),
    [
        ("sqlite", "processes", signal.SIGINT, True),  # Ctrl-C in a terminal
        pytest.param("postgres", "processes", signal.SIGTERM, False, marks=pytest.mark.postgres),  # a stop
        ("sqlite", "threads", signal.SIGINT, True),
    ],
    indirect=["child_storage"],
    ids=["ctrl-c-sqlite-processes", "sigterm-postgres-processes", "ctrl-c-sqlite-threads"],
)
def test_one_signal_stops_the_sweep_cleanly_and_the_same_call_continues_it(
    child_storage: str, workers: str, signum: int, group: bool, tmp_path: Path
) -> None:
    child = Child(child_storage, tmp_path, workers)
    store = SqlTrialStore(child_storage)
    try:
        running = child.wait_until_trials_run(store)
        child.signal(signum, group)
        code = child.wait()
    finally:
        if child.process.poll() is None:
            os.killpg(child.process.pid, signal.SIGKILL)
    text = child.text()
    assert code == -signal.SIGINT, text[-3000:]  # as after any Ctrl-C: a shell shows 130
    assert "Traceback" not in text and "| ERROR" not in text, text[-3000:]
    assert text.count("run the same call again to continue") >= 1
    assert "stopping the sweep (again to stop at once)" in text
    assert child.group_left() == []  # no worker, fork server or Prefect server left behind
    sid = store.sweep_id("interrupted")
    states = {r.number: r.state for r in store.trials(sid)}
    assert TrialState.RUNNING not in states.values()
    interrupted = sorted(n for n, s in states.items() if s == TrialState.INTERRUPTED)
    assert interrupted and set(interrupted) <= set(running)  # the running ones; one may have just finished
    assert store.sweep(sid)["status"] == "interrupted"
    assert _flow_run_state(store) == "CANCELLED"
    reached = {r.number: r.last_step for r in store.trials(sid)}

    result = child.continue_here(workers)
    records = {r.number: r for r in result.records}
    assert len(records) == 12 and all(r.state == TrialState.COMPLETE for r in records.values())
    assert len({r.config_hash for r in records.values()}) == 12  # nothing evaluated twice
    starts = [line.split() for line in child.log.read_text().splitlines()]
    for number in interrupted:
        assert records[number].attempt == 2
        again = [int(first) for n, attempt, first in starts if int(n) == number and attempt == "2"]
        assert again == [(reached[number] or 0) + 1]  # from where it stopped, not from the start
    assert result.budget["failures"]["used"] == 0  # an interrupt is no failure
    store.close()


def test_a_sigterm_to_the_whole_group_stops_the_sweep_without_running_a_trial_again(
    sqlite_url: str, tmp_path: Path
) -> None:
    """systemd, Slurm and process managers signal every process of the group: the workers die with it.

    Their trials are not started again after the stop (before, the sweep ran them to their end and took
    35-55 s to exit); the same call runs them again, and they complete."""
    child = Child(sqlite_url, tmp_path, "processes")
    store = SqlTrialStore(sqlite_url)
    try:
        child.wait_until_trials_run(store)
        signalled = time.monotonic()
        child.signal(signal.SIGTERM, group=True)
        code = child.wait()
        took = time.monotonic() - signalled
    finally:
        if child.process.poll() is None:
            os.killpg(child.process.pid, signal.SIGKILL)
    text = child.text()
    assert code == -signal.SIGINT, text[-3000:]
    assert "Traceback" not in text and "| ERROR" not in text, text[-3000:]
    assert "run the same call again to continue" in text
    assert child.group_left() == []
    starts = [line.split() for line in child.log.read_text().splitlines()]
    assert [s for s in starts if s[1] != "1"] == [], f"a trial ran again after the stop ({took:.1f} s)"
    sid = store.sweep_id("interrupted")
    left = {r.number: r.state for r in store.trials(sid) if r.state != TrialState.COMPLETE}
    assert left and set(left.values()) <= {TrialState.INTERRUPTED, TrialState.FAIL_RECOVERABLE}
    store.close()
    result = child.continue_here("processes")
    assert len(result.records) == 12 and all(r.state == TrialState.COMPLETE for r in result.records)
    assert len({r.config_hash for r in result.records}) == 12


def test_a_second_ctrl_c_exits_at_once_and_leaves_nothing_behind(sqlite_url: str, tmp_path: Path) -> None:
    child = Child(sqlite_url, tmp_path, "processes")
    store = SqlTrialStore(sqlite_url)
    try:
        child.wait_until_trials_run(store)
        child.signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        while "stopping the sweep (again to stop at once)" not in child.text():  # a person sees it, then presses
            assert time.monotonic() < deadline, child.text()[-3000:]
            time.sleep(0.01)
        child.signal(signal.SIGINT)
        code = child.wait()
    finally:
        if child.process.poll() is None:
            os.killpg(child.process.pid, signal.SIGKILL)
    assert code == 128 + signal.SIGINT, child.text()[-3000:]
    assert "Ctrl-C (SIGINT) again: stopped at once" in child.text()
    assert child.group_left() == []
    store.close()


class TestInterrupts:
    """The flag itself: a signal raises nothing into the code it interrupts, and handlers are restored."""

    def test_a_signal_sets_the_flag_and_raises_nothing(self) -> None:
        before = signal.getsignal(signal.SIGINT)
        with Interrupts() as interrupts:
            assert interrupts.signal_name() is None
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 10
            while interrupts.signal_name() is None:  # the handler runs between bytecodes of this thread
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert interrupts.signal_name() == "Ctrl-C (SIGINT)"
        assert signal.getsignal(signal.SIGINT) is before

    def test_sigterm_is_named(self) -> None:
        with Interrupts() as interrupts:
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + 10
            while interrupts.signal_name() is None:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert interrupts.signal_name() == "SIGTERM"
