"""Trials on a work pool through long-lived runners (`WorkPoolExecutor(runners=N)`): a real server, real
workers, PostgreSQL as the trial store."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_hpo import Budget, Categorical, Float, SqlTrialStore, TrialState, WorkPoolExecutor, sweep
from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.schedulers import ASHAScheduler
from tests.executors.conftest import PREFECT, ROOT
from tests.executors.test_workpool import _first_report_pid, _parent_pid, _run_in_background
from tests.interrupt_train import steady
from tests.servers import free_port, start_prefect_server, stop
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


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first found, then theirs), read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents.setdefault(_parent_pid(int(entry)), []).append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.timeout(600)
def test_a_worker_machine_lost_mid_trial_its_runner_is_crashed_and_the_trial_runs_again_elsewhere(
    prefect_server: str, workers: dict[str, int], pg_url: str, tmp_path: Path
) -> None:
    from prefect_hpo.deploy import ensure_work_pool

    env = dict(os.environ, PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp_path))
    env.update(PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="0")
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        ensure_work_pool("hpo", {"machines": None})
    machines = [  # two "machines": a worker each, one runner at a time each
        subprocess.Popen(
            [
                PREFECT,
                "worker",
                "start",
                "--pool",
                "hpo",
                "--work-queue",
                "machines",
                "--limit",
                "1",
                "--name",
                f"m{i}",
            ],
            env=env,
            stdout=open(tmp_path / f"m{i}.log", "wb"),  # noqa: SIM115 - the process owns it
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        for i in range(2)
    ]
    executor = WorkPoolExecutor(
        pool="hpo", default_queue="machines", runners=2, heartbeat_interval=0.5, heartbeat_timeout=4
    )
    try:
        with temporary_settings({PREFECT_API_URL: prefect_server}):
            thread, out = _run_in_background(
                train=only_the_first_is_slow,
                space={"i": Categorical([0, 1, 2, 3])},
                objective="loss",
                strategy="grid",
                budget=Budget(max_trials=4, max_concurrent=2),
                storage=pg_url,
                name="machine-lost",
                executor=executor,
            )
            number, pid = _first_report_pid(pg_url, "machine-lost")
            lost = next(m for m in machines if pid in _descendants(m.pid))
            for victim in [lost.pid, *_descendants(lost.pid)]:  # the machine goes: every process on it at once
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            thread.join(timeout=300)
            assert not thread.is_alive(), "the sweep did not finish after a worker machine was lost"
            assert "error" not in out, out.get("error")
            records = out["result"].records  # type: ignore[attr-defined]
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_="machine-lost-runner-"))
                )
    finally:
        for machine in machines:
            if machine.poll() is None:
                machine.kill()
            machine.wait(timeout=10)
    assert all(r.state == TrialState.COMPLETE for r in records), [(r.number, r.state, r.error) for r in records]
    retried = next(r for r in records if r.number == number)
    assert retried.attempt == 2 and retried.value == 0.5
    crashed = [run for run in runs if run.state is not None and run.state.is_crashed()]
    assert len(crashed) == 1 and "the runner died" in (crashed[0].state.message or "")  # type: ignore[union-attr]


RUNNER_CHILD = """
import sys
from prefect_hpo import Budget, Categorical, WorkPoolExecutor, sweep
from tests.interrupt_train import steady

if __name__ == "__main__":
    sweep(steady, {"x": Categorical([i / 10 for i in range(8)]), "log": sys.argv[2]}, "loss", "grid",
          Budget(max_trials=8, max_concurrent=2), storage=sys.argv[1], name="ctrl-c-runners",
          executor=WorkPoolExecutor(pool="hpo", runners=2))
"""


@pytest.mark.timeout(600)
def test_a_ctrl_c_interrupts_the_trials_on_runners_the_runners_end_within_seconds_and_the_call_continues(
    prefect_server: str, workers: dict[str, int], pg_url: str, tmp_path: Path
) -> None:
    from prefect_hpo import sweep

    log, output = tmp_path / "starts.log", tmp_path / "child.out"
    child = subprocess.Popen(
        [sys.executable, "-c", RUNNER_CHILD, pg_url, str(log)],
        cwd=ROOT,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=open(output, "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        env={**os.environ, "PREFECT_API_URL": prefect_server},
    )
    store = SqlTrialStore(pg_url)
    try:
        deadline = time.monotonic() + 240
        while True:  # both runners busy, each trial past its second step
            assert child.poll() is None, output.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the runners did not take two trials"
            if "ctrl-c-runners" in store.sweep_names():
                running = store.trials(store.sweep_id("ctrl-c-runners"), [TrialState.RUNNING])
                if len(running) == 2 and all((r.last_step or 0) >= 2 for r in running):
                    break
            time.sleep(0.05)
        os.killpg(child.pid, signal.SIGINT)  # a terminal's Ctrl-C
        code = child.wait(timeout=120)
        ended = time.monotonic()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    text = output.read_text(errors="replace")
    assert code == -signal.SIGINT, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    sid = store.sweep_id("ctrl-c-runners")
    interrupted = store.trials(sid, [TrialState.INTERRUPTED])
    assert sorted(r.number for r in interrupted) == sorted(r.number for r in running)
    assert store.trials(sid, [TrialState.RUNNING]) == [] and store.offers(sid) == {}
    with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
        named = FlowRunFilter(name=FlowRunFilterName(like_="ctrl-c-runners-runner-"))
        while True:  # the runners see the sweep is over and end by themselves
            runs = client.read_flow_runs(flow_run_filter=named)
            if runs and all(run.state is not None and run.state.is_final() for run in runs):
                break
            assert time.monotonic() - ended < 15, [(run.name, run.state) for run in runs]
            time.sleep(0.2)
        assert all(run.state is not None and run.state.is_completed() for run in runs)
        # the same call, run again, continues the sweep: the interrupted trials first, from their last step
        result = sweep(
            steady,
            {"x": Categorical([i / 10 for i in range(8)]), "log": str(log)},
            "loss",
            "grid",
            Budget(max_trials=8, max_concurrent=2),
            storage=pg_url,
            name="ctrl-c-runners",
            executor=WorkPoolExecutor(pool="hpo", runners=2),
        )
    store.close()
    assert len(result.records) == 8 and all(r.state == TrialState.COMPLETE for r in result.records)
    resumed = {r.number: r for r in result.records if r.number in {t.number for t in interrupted}}
    assert all(r.attempt == 2 for r in resumed.values())
    starts = [line.split() for line in log.read_text().splitlines()]
    assert all(int(first) > 1 for number, attempt, first in starts if int(attempt) == 2)  # from its checkpoint


@pytest.mark.timeout(600)
def test_the_prefect_server_restarted_mid_sweep_the_runners_and_the_parent_go_on_and_nothing_is_lost(
    tmp_path: Path, pg_url: str
) -> None:
    from prefect_hpo.deploy import setup_work_pool

    home, port = tmp_path / "server", free_port()
    home.mkdir()
    first = start_prefect_server(home, port=port)
    api = first.__enter__()
    env = dict(os.environ, PREFECT_API_URL=api, PREFECT_HOME=str(tmp_path / "worker"))
    env.update(PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="0")
    with temporary_settings({PREFECT_API_URL: api}):
        setup_work_pool(ROOT, pool="restart", queues={"cpu": None})
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "restart", "--work-queue", "cpu", "--name", "restart-worker"],
        env=env,
        stdout=open(tmp_path / "worker.log", "wb"),  # noqa: SIM115 - the process owns it
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    restarted = None
    try:
        with temporary_settings({PREFECT_API_URL: api}):
            # heartbeat_timeout: longer than the restart, so that no runner is taken for dead meanwhile
            executor = WorkPoolExecutor(pool="restart", runners=2, heartbeat_timeout=60)
            thread, out = _run_in_background(
                train=steady,
                space={"x": Categorical([i / 10 for i in range(8)]), "log": str(tmp_path / "starts.log")},
                objective="loss",
                strategy="grid",
                budget=Budget(max_trials=8, max_concurrent=2),
                storage=pg_url,
                name="server-restarted",
                executor=executor,
            )
            store = SqlTrialStore(pg_url)
            deadline = time.monotonic() + 240
            while not (
                "server-restarted" in store.sweep_names()
                and len(store.trials(store.sweep_id("server-restarted"), [TrialState.COMPLETE])) >= 1
                and len(store.trials(store.sweep_id("server-restarted"), [TrialState.RUNNING])) == 2
            ):
                assert time.monotonic() < deadline and thread.is_alive(), out
                time.sleep(0.1)
            first.__exit__(None, None, None)  # the server goes, mid-sweep, with two trials running
            restarted = start_prefect_server(home, port=port)
            assert restarted.__enter__() == api  # and comes back where it was, with its database
            thread.join(timeout=300)
        assert not thread.is_alive(), "the sweep did not finish after its server restarted"
        assert "error" not in out, out.get("error")
        records = out["result"].records  # type: ignore[attr-defined]
        assert len(records) == 8 and all(r.state == TrialState.COMPLETE and r.attempt == 1 for r in records), [
            (r.number, r.state, r.attempt, r.error) for r in records
        ]
        starts = (tmp_path / "starts.log").read_text().splitlines()
        assert len(starts) == 8  # each trial ran once: nothing lost, nothing run again
        store.close()
    finally:
        stop(worker)
        if restarted is not None:
            restarted.__exit__(None, None, None)
