"""The local executor with real Prefect task runs, real worker processes and a real SQLite store."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_hpo.executors.base import TrialHandle
from prefect_hpo.executors.local import LocalExecutor, WorkerKind
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
        executor = LocalExecutor(train, store, workers=workers, slots=slots, trial_time_limit=time_limit)
        handles: list[TrialHandle] = []
        try:
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
            while len(ended) < len(handles):
                ended += executor.wait_any(handles, timeout=120)
            assert all(h.error is None for h in ended)
            return [store.trial(sid, h.record.number) for h in sorted(ended, key=lambda h: h.record.number)]
        finally:
            executor.close()
            store.close()

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
    trial.report(0, pid=float(os.getpid()))
    time.sleep(config["seconds"])  # one blocking call: only killing the process stops it
    return 1.0


def test_process_past_its_time_limit_is_killed(sqlite_url: str) -> None:
    start = time.monotonic()
    (rec,) = run_trials(sqlite_url, sleeper, [{"seconds": 60}], workers="processes", slots=1, time_limit=2.0)
    assert time.monotonic() - start < 45
    assert rec.state == TrialState.FAIL and "TrialTimeout" in (rec.error or "")
    assert "trial_time_limit=2s" in (rec.reason or "")
    pid = int(SqlTrialStore(sqlite_url).reports(rec.sweep_id)[0].metrics["pid"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"worker {pid} still alive after its trial timed out")


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
