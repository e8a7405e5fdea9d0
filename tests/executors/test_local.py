"""The local executor with real Prefect task runs, real worker processes and a real SQLite store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_hpo.executors.base import TrialHandle
from prefect_hpo.executors.local import LocalTrials
from prefect_hpo.executors.settings import WorkerKind
from prefect_hpo.objective import Objective
from prefect_hpo.records import TrialRecord, TrialState
from prefect_hpo.store import SqlTrialStore
from prefect_hpo.trial import Trial, TrialSpec

pytestmark = pytest.mark.prefect


def run_trials(
    url: str,
    train: Callable[..., Any],
    configs: list[dict[str, Any]],
    *,
    workers: WorkerKind,
    slots: int = 2,
    time_limit: float | None = None,
    cancel_after_first_report: bool = False,
) -> list[TrialRecord]:
    """Submit every config at once on a fresh executor inside a Prefect flow; return the final records."""

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=len(configs)))
    def harness() -> list[TrialRecord]:
        store = SqlTrialStore(url)
        sid = store.open_sweep("exec", space={}, objectives=[], strategy="-", budget={})
        handles: list[TrialHandle] = []
        with store, LocalTrials(train, store, workers=workers, slots=slots, trial_time_limit=time_limit) as executor:
            for i, config in enumerate(configs):
                rec = store.create_trial(sid, i, config, f"h{i}")
                spec = TrialSpec(rec.id, i, "exec", config, (Objective("loss"),), None, True)
                handles.append(executor.submit(rec, spec))
            if cancel_after_first_report:
                deadline = time.monotonic() + 60
                while not store.reports(sid) and time.monotonic() < deadline:
                    time.sleep(0.02)
                executor.cancel(handles[0], "cancelled by test")
            ended: list[TrialHandle] = []
            deadline = time.monotonic() + 120
            while len(ended) < len(handles):
                assert time.monotonic() < deadline, f"{len(handles) - len(ended)} trials did not end within 120 s"
                ended += executor.wait_any(handles, timeout=5)
            assert all(h.error is None for h in ended)
            return [store.trial(sid, h.record.number) for h in sorted(ended, key=lambda h: h.record.number)]

    return harness()


def busy(config: dict[str, Any], trial: Trial) -> dict[str, float]:
    # meet the other trial first (through the store), so that worker start-up skew cannot hide overlap
    trial.report(0, ready=1.0)
    store, deadline = SqlTrialStore(config["url"]), time.monotonic() + 60
    while len(store.reports(1)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    store.close()
    t0 = time.time()
    x = 0
    while time.time() - t0 < config["seconds"]:
        x += 1  # pure-Python work: holds the GIL, so only processes overlap it
    return {"loss": float(x % 7), "pid": float(os.getpid()), "t0": t0, "t1": time.time()}


def test_cpu_bound_trials_run_in_parallel_processes(sqlite_url: str) -> None:
    configs = [{"seconds": 1.0, "url": sqlite_url}, {"seconds": 1.0, "url": sqlite_url}]
    a, b = run_trials(sqlite_url, busy, configs, workers="processes")
    assert a.state == b.state == TrialState.COMPLETE
    assert a.metrics["pid"] != b.metrics["pid"] != os.getpid()
    overlap = min(a.metrics["t1"], b.metrics["t1"]) - max(a.metrics["t0"], b.metrics["t0"])
    assert overlap > 0.5, f"the two trials overlapped only {overlap:.2f}s"
    assert a.task_run_id and b.task_run_id and a.task_run_id != b.task_run_id


def sleeper(config: dict[str, Any], trial: Trial) -> float:
    trial.report(0, pid=float(os.getpid()), t0=time.time())
    time.sleep(config["seconds"])  # one blocking call: only killing the process stops it
    return 1.0


def test_process_past_its_time_limit_is_killed(sqlite_url: str) -> None:
    (rec,) = run_trials(sqlite_url, sleeper, [{"seconds": 60}], workers="processes", slots=1, time_limit=2.0)
    assert rec.state == TrialState.FAIL and "TrialTimeout" in (rec.error or "")
    assert "trial_time_limit=2s" in (rec.reason or "")
    (report,) = SqlTrialStore(sqlite_url).reports(rec.sweep_id)
    assert rec.finished_at is not None and rec.finished_at.timestamp() - report.metrics["t0"] < 10  # not 60
    pid = int(report.metrics["pid"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"worker {pid} still alive after its trial timed out")


HOG = "import time\nend = time.monotonic() + 300\nwhile time.monotonic() < end:\n    pass\n"


@pytest.mark.parametrize("workers", ["processes", "threads"])
def test_a_time_limit_holds_within_two_seconds_on_a_busy_machine(sqlite_url: str, workers: WorkerKind) -> None:
    """Two busy processes hold both cores (as other work on a user's machine does); 4 slots, two trials that
    would sleep a minute under a 3 s limit: each ends within 2 s of its limit, counted from the moment its
    training function started (a worker process that is slow to start under load is not the trial's
    time), and the quick ones complete."""
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(2)]
    try:
        configs = [{"seconds": 60.0}, {"seconds": 60.0}, {"seconds": 0.1}, {"seconds": 0.2}]
        records = run_trials(sqlite_url, sleeper, configs, workers=workers, slots=4, time_limit=3.0)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert [r.state for r in records] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    store = SqlTrialStore(sqlite_url)
    started = {r.number: r.metrics["t0"] for r in store.reports(records[0].sweep_id) if r.step == 0}
    store.close()
    for record in records[:2]:
        assert "trial_time_limit=3s" in (record.reason or "") and record.finished_at is not None
        ran = record.finished_at.timestamp() - started[record.number]
        assert 3.0 <= ran < 5.0, f"trial {record.number} ended {ran:.2f} s after its training function started"


def reporter(config: dict[str, Any], trial: Trial) -> float:
    for step in range(10_000):
        trial.report(step, loss=1.0 / (step + 1))
        time.sleep(0.01)
    return 0.0


def test_thread_past_its_time_limit_is_stopped_at_its_next_report(sqlite_url: str) -> None:
    (rec,) = run_trials(sqlite_url, reporter, [{}], workers="threads", time_limit=1.0)
    assert rec.state == TrialState.FAIL and "TrialTimeout" in (rec.error or "")
    store = SqlTrialStore(sqlite_url)
    count = len(store.reports(rec.sweep_id))
    assert 10 < count < 2_000
    assert store.trial(rec.sweep_id, 0).stop_requested is not None


def dies(config: dict[str, Any], trial: Trial) -> float:
    if config["die"]:
        os._exit(3)
    return 0.5


def test_a_worker_that_dies_fails_its_trial_recoverably_and_the_pool_goes_on(sqlite_url: str) -> None:
    dead, alive = run_trials(sqlite_url, dies, [{"die": True}, {"die": False}], workers="processes", slots=1)
    assert dead.state == TrialState.FAIL_RECOVERABLE and "died with exit code 3" in (dead.error or "")
    assert alive.state == TrialState.COMPLETE and alive.value == 0.5


@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_cancel_stops_a_running_trial_as_pruned(sqlite_url: str, workers: WorkerKind) -> None:
    (rec,) = run_trials(sqlite_url, reporter, [{}], workers=workers, cancel_after_first_report=True)
    assert rec.state == TrialState.PRUNED and rec.reason == "cancelled by test"


class Halt(BaseException):
    """A BaseException of the training function's own (as a framework's cancel or a GeneratorExit is)."""


def halts(config: dict[str, Any], trial: Trial) -> float:
    trial.report(1, loss=0.5)
    if config["halt"]:
        raise Halt("stop everything")
    return 0.5


@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_a_base_exception_of_the_training_function_fails_only_its_trial(sqlite_url: str, workers: WorkerKind) -> None:
    """Whatever gets past the trial runtime ends that trial FAIL, with its text: a trial thread that died of
    it left its slot waiting forever, and a worker's sent it up into the sweep."""
    halted, fine = run_trials(sqlite_url, halts, [{"halt": True}, {"halt": False}], workers=workers)
    assert halted.state == TrialState.FAIL and "Halt: stop everything" in (halted.error or "")
    assert (halted.error or "").splitlines()[-1].startswith("the training function raised Halt, ")
    assert fine.state == TrialState.COMPLETE and fine.value == 0.5
