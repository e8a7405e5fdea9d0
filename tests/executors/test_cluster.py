"""Trials as task runs on a real local Dask cluster, through prefect-dask's DaskTaskRunner."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_hpo import Budget, ClusterExecutor, Float, PrefectHPOError, TrialState, sweep
from prefect_hpo.schedulers import ASHAScheduler
from prefect_hpo.trial import Trial
from tests.conftest import TEST_MARKER
from tests.processes import left_behind

pytest.importorskip("prefect_dask", reason="the Dask executor needs the dask extra: pip install 'prefect-hpo[dask]'")
pytestmark = pytest.mark.prefect


def curve(config: dict[str, Any], trial: Trial) -> dict[str, float]:
    loss = 1.0
    for epoch in range(1, 10):
        loss = config["q"] + 1.0 / epoch
        trial.report(epoch, loss=loss, pid=float(os.getpid()))
    return {"loss": loss, "pid": float(os.getpid())}


def endless(config: dict[str, Any], trial: Trial) -> float:
    """Reports when its training began, then runs until it is stopped."""
    trial.report(0, loss=1.0, began=time.time())
    while True:
        time.sleep(0.05)


@contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """`count` processes that keep a core busy each, as other work on a user's machine does."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def dies_once(config: dict[str, Any], trial: Trial) -> float:
    """The first attempt of the trial with `die` takes its cluster worker process down with it."""
    trial.report(1, loss=1.0)
    if config["die"] > 0.5 and trial.attempt == 1:
        os._exit(3)
    return config["die"]


def local_dask() -> ClusterExecutor:
    return ClusterExecutor.dask(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)


def local_ray() -> ClusterExecutor:
    pytest.importorskip("prefect_ray", reason="the Ray executor needs the ray extra: pip install 'prefect-hpo[ray]'")
    return ClusterExecutor.ray(num_cpus=2, include_dashboard=False)


# A local Ray cluster starts a dozen processes: on 2 cores held by two busy processes (the suite's run under
# load) the sweep ran past the suite's 300 s limit, which it keeps without them.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("cluster", [local_dask, local_ray], ids=["dask", "ray"])
def test_a_sweep_runs_on_a_cluster_with_asha(sqlite_url: str, cluster: Callable[[], ClusterExecutor]) -> None:
    result = sweep(
        curve,
        {"q": Float(0.0, 1.0)},
        "loss",
        "random",
        Budget(max_trials=10, max_concurrent=2),
        storage=sqlite_url,
        scheduler=ASHAScheduler(max_t=9, grace_period=1, reduction_factor=3),
        seed=3,
        executor=cluster(),
    )
    states = {r.state for r in result.records}
    assert len(result.records) == 10 and states <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states
    # every trial ran in a cluster worker process, recorded by the task itself with its task run id
    pids = {r.metrics["pid"] for r in result.records}
    assert os.getpid() not in pids
    assert all(r.task_run_id for r in result.records)
    assert all(r.last_step == 9 for r in result.records if r.state == TrialState.COMPLETE)


def test_a_lost_cluster_worker_leaves_the_trial_recoverable_and_it_is_retried(sqlite_url: str) -> None:
    result = sweep(
        dies_once,
        {"die": Float(0.0, 1.0)},
        "loss",
        "grid",
        Budget(max_trials=3, max_concurrent=1),
        storage=sqlite_url,
        grid_resolution=3,  # die = 0.0, 0.5, 1.0: the last one kills its worker once
        executor=local_dask(),
    )
    by_die = {r.config["die"]: r for r in result.records}
    assert set(by_die) == {0.0, 0.5, 1.0}
    assert all(r.state == TrialState.COMPLETE for r in result.records)
    assert by_die[1.0].attempt == 2 and by_die[0.0].attempt == 1  # a retry is a new attempt of the same trial

    # The workers ran their task runs on the sweep's temporary server: none started one of its own (the dead
    # worker's was left running, orphaned).
    def a_workers_server(proc: psutil.Process) -> bool:
        return "uvicorn" in " ".join(proc.cmdline()) and proc.ppid() != os.getpid()

    assert left_behind(TEST_MARKER, os.environ[TEST_MARKER], within=15.0, which=a_workers_server) == []


def test_a_trial_time_limit_holds_on_a_cluster_beside_busy_processes(sqlite_url: str) -> None:
    """A 3 s trial_time_limit ends the training within about a second of its limit on a busy machine."""
    with busy_processes(2):
        result = sweep(
            endless,
            {"q": Float(0.0, 1.0)},
            budget=Budget(max_trials=2, max_concurrent=2, trial_time_limit=3),
            storage=sqlite_url,
            max_retries=0,
            executor=local_dask(),
        )
    assert len(result.records) == 2
    began = {report.number: report.metrics["began"] for report in result.reports}
    for record in result.records:
        assert record.state == TrialState.FAIL and "trial_time_limit=3s" in (record.reason or ""), record
        assert record.finished_at is not None
        ran = record.finished_at.timestamp() - began[record.number]
        assert 3.0 <= ran <= 5.0, f"trial {record.number} ran {ran:.2f} s under a 3 s limit"


def test_a_missing_extra_or_a_wrong_executor_is_named() -> None:
    with pytest.raises(PrefectHPOError, match="executor must be a WorkPoolExecutor, a ClusterExecutor"):
        sweep(curve, {"q": Float(0.0, 1.0)}, executor="dask")  # type: ignore[arg-type]


def test_only_a_cluster_started_here_is_handed_the_temporary_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster given by address runs on other machines, which cannot reach this machine's temporary server."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert local_dask().on_this_machine
    assert not ClusterExecutor.dask(address="tcp://10.0.0.5:8786").on_this_machine
    pytest.importorskip("prefect_ray")
    assert ClusterExecutor.ray().on_this_machine
    assert not ClusterExecutor.ray(address="ray://10.0.0.5:10001").on_this_machine
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert not ClusterExecutor.ray().on_this_machine


class _RayThatCannotStart(ThreadPoolTaskRunner):  # type: ignore[type-arg]
    """A task runner failing as Ray's local node start fails on a busy machine (its fixed 30 s wait cannot be
    provoked on demand), to see what the user reads."""

    def __enter__(self) -> _RayThatCannotStart:
        raise Exception(
            "The current node timed out during startup. This could happen because some of the raylet failed to "
            "startup or the GCS has become overloaded."
        )

    def duplicate(self) -> _RayThatCannotStart:
        return _RayThatCannotStart()


def test_a_ray_node_that_cannot_start_is_one_line_naming_the_fix(tmp_path: Any) -> None:
    executor = ClusterExecutor(_RayThatCannotStart(), "ray")
    with pytest.raises(PrefectHPOError, match=r"ray start --head.*address='auto'") as caught:
        sweep(
            curve,
            {"q": Float(0.0, 1.0)},
            budget=Budget(max_trials=2),
            executor=executor,
            storage=str(tmp_path / "s.db"),
            name="ray-start",
        )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    # the same failure from a Dask cluster is not Ray's and keeps its own words
    assert ClusterExecutor(_RayThatCannotStart(), "dask").explain_start_failure(Exception("x")) is None
