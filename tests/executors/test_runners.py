"""Trials on a work pool through long-lived runners (`WorkPoolExecutor(runners=N)`): a real server, real
workers, PostgreSQL as the trial store."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_hpo import Budget, Categorical, Float, SqlTrialStore, TrialState, WorkPoolExecutor, sweep
from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.schedulers import ASHAScheduler
from tests.executors.test_workpool import _first_report_pid, _parent_pid, _run_in_background
from tests.workpool_train import only_the_first_is_slow, train

pytestmark = [pytest.mark.prefect, pytest.mark.postgres]


def test_runner_settings_are_checked_before_anything_runs() -> None:
    with pytest.raises(PrefectHPOError, match=r"WorkPoolExecutor.runners must be an integer >= 0, got -1"):
        WorkPoolExecutor(runners=-1)
    with pytest.raises(PrefectHPOError, match=r"runners must be an integer >= 0, got True"):
        WorkPoolExecutor(runners=True)
    with pytest.raises(PrefectHPOError, match=r"runner_idle_timeout must be a number of seconds > 0"):
        WorkPoolExecutor(runners=2, runner_idle_timeout=0)
    with pytest.raises(PrefectHPOError, match=r"heartbeat_timeout \(2s\) must be longer than heartbeat_interval"):
        WorkPoolExecutor(heartbeat_interval=2, heartbeat_timeout=2)


@pytest.mark.timeout(600)
def test_runners_take_the_trials_one_after_another_each_a_task_run_of_its_own(
    prefect_server: str, workers: dict[str, int], worker_home: Path, pg_url: str
) -> None:
    executor = WorkPoolExecutor(
        pool="hpo", resources=lambda c: {"gpu": 1} if c["big"] else {}, runners=3, runner_idle_timeout=20
    )
    logs = sorted(worker_home.glob("worker-*.log"))
    seen = {log: log.stat().st_size for log in logs}
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        result = sweep(
            train,
            {"q": Float(0.0, 1.0), "big": Categorical([True, False])},
            "loss",
            "random",
            Budget(max_trials=16, max_concurrent=3),
            storage=pg_url,
            name="by-runners",
            scheduler=ASHAScheduler(max_t=9, grace_period=1, reduction_factor=2),
            seed=1,
            executor=executor,
        )
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_="by-runners-")))
            task_runs = {r.number: client.read_task_run(r.task_run_id) for r in result.records if r.task_run_id}
    states = {r.state for r in result.records}
    assert len(result.records) == 16 and states <= {TrialState.COMPLETE, TrialState.PRUNED}, [
        (r.number, r.state, r.error) for r in result.records
    ]
    runners = {str(run.id): run for run in runs}
    # no flow run per trial: only runners, at most 3 alive at once, each running several trials
    assert all(run.name.startswith("by-runners-runner-") for run in runs), [run.name for run in runs]
    assert 1 <= len(runners) < 16
    ran_by: dict[str, list[int]] = {}
    for record in result.records:
        assert record.attempt == 1 and record.worker, record
        # each trial is a task run of a runner's flow run, in the trial's own state
        task_run = task_runs[record.number]
        runner_id = str(task_run.flow_run_id)
        assert runner_id in runners and task_run.name == f"trial-{record.number}"
        assert task_run.state is not None and task_run.state.name == (
            "Pruned" if record.state == TrialState.PRUNED else "Completed"
        )
        ran_by.setdefault(runner_id, []).append(record.number)
        run = runners[runner_id]
        assert run.work_queue_name == ("gpu" if record.config["big"] else "cpu")  # each runner claims its queue's
    assert max(len(numbers) for numbers in ran_by.values()) >= 3, ran_by  # runners are kept between trials
    # after the sweep, every runner ends by itself (it sees the sweep is over) and no offer is left
    deadline = time.monotonic() + 60
    with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            states_now = [client.read_flow_run(run.id).state for run in runs]
            if all(state is not None and state.is_final() for state in states_now):
                break
            time.sleep(0.5)
    assert all(state is not None and state.is_completed() for state in states_now), states_now
    store = SqlTrialStore(pg_url)
    try:
        assert store.offers(result.records[0].sweep_id) == {}
    finally:
        store.close()
    for log in logs:
        with open(log, "rb") as f:
            f.seek(seen[log])
            output = f.read().decode(errors="replace")
        noisy = [line for line in output.splitlines() if "ERROR" in line or "Traceback" in line]
        assert not noisy, f"{log.name}:\n" + "\n".join(noisy[:20])


@pytest.mark.timeout(600)
def test_a_runner_killed_mid_trial_leaves_it_to_another_runner_and_nothing_runs_twice_at_once(
    prefect_server: str, workers: dict[str, int], pg_url: str
) -> None:
    executor = WorkPoolExecutor(pool="hpo", runners=2, heartbeat_interval=0.5, heartbeat_timeout=4)
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        thread, out = _run_in_background(
            train=only_the_first_is_slow,
            space={"i": Categorical([0, 1, 2, 3, 4, 5])},
            objective="loss",
            strategy="grid",
            budget=Budget(max_trials=6, max_concurrent=2),
            storage=pg_url,
            name="runner-killed",
            executor=executor,
        )
        number, pid = _first_report_pid(pg_url, "runner-killed")
        fork_server = _parent_pid(pid)
        runner = _parent_pid(fork_server)  # trial process <- fork server <- the runner's flow-run process
        os.kill(runner, signal.SIGKILL)
        # the trial's process dies with its runner, before the sweep could retry it (heartbeat_timeout)
        store = SqlTrialStore(pg_url)
        try:
            sid = store.sweep_id("runner-killed")
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _alive(pid), "the trial's process outlived its runner"
            assert store.trial(sid, number).attempt == 1  # not retried yet: never two runs of it at once
        finally:
            store.close()
        thread.join(timeout=300)
    assert not thread.is_alive(), "the sweep did not finish after a runner was killed"
    assert "error" not in out, out.get("error")
    records = out["result"].records  # type: ignore[attr-defined]
    assert len(records) == 6 and all(r.state == TrialState.COMPLETE for r in records), [
        (r.number, r.state, r.attempt, r.error) for r in records
    ]
    killed = next(r for r in records if r.number == number)
    assert killed.config["i"] == 0 and killed.attempt == 2 and killed.value == 0.5
    assert {r.attempt for r in records if r.number != number} == {1}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
