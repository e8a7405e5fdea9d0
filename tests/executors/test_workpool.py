"""Trials as flow runs on a real work pool: a real server, real workers, PostgreSQL as the trial store."""

from __future__ import annotations

import contextvars
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter, FlowRunFilterName
from prefect.deployments import run_deployment
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling

from prefect_hpo import Budget, Categorical, Float, SqlTrialStore, TrialState, WorkPoolExecutor, sweep
from prefect_hpo.errors import TrialFunctionError
from prefect_hpo.executors.workpool import WorkPoolTrials
from prefect_hpo.objective import Objective
from prefect_hpo.schedulers import ASHAScheduler
from prefect_hpo.trial import TrialSpec
from tests.executors.conftest import PREFECT, ROOT
from tests.prefect_records import leaks, server_records, wait_for_events
from tests.servers import flush_to_server, stop, wait_final
from tests.workpool_train import slow_first_attempt, train

pytestmark = [pytest.mark.prefect, pytest.mark.postgres]


def test_queue_routing() -> None:
    executor = WorkPoolExecutor(resources=lambda c: {"gpu": 1} if c["big"] else {})
    assert executor.queue_for({"big": True}) == "gpu" and executor.queue_for({"big": False}) == "cpu"
    assert WorkPoolExecutor(resources={"gpu": 0.5}).queue_for({}) == "gpu"


@pytest.mark.timeout(600)  # 12 flow runs, a new Python process each: 155 s on a loaded 2-core machine
def test_a_sweep_runs_on_workers_by_queue_with_asha(
    prefect_server: str, workers: dict[str, int], worker_home: Path, pg_url: str
) -> None:
    executor = WorkPoolExecutor(pool="hpo", resources=lambda c: {"gpu": 1} if c["big"] else {})
    logs = sorted(worker_home.glob("worker-*.log"))
    seen = {log: log.stat().st_size for log in logs}  # the workers' output before this sweep
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        result = sweep(
            train,
            {"q": Float(0.0, 1.0), "big": Categorical([True, False])},
            "loss",
            "random",
            Budget(max_trials=12, max_concurrent=4),
            storage=pg_url,
            name="on-workers",
            scheduler=ASHAScheduler(max_t=9, grace_period=1, reduction_factor=2),
            seed=0,
            executor=executor,
        )
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["hpo-trial"]))
            )
            named = FlowRunFilter(name=FlowRunFilterName(any_=["on-workers"]))
            (sweep_run,) = client.read_flow_runs(flow_run_filter=named)
            # sweep -> trial task -> trial flow run, read through the API rather than from the task runs' events:
            # on a loaded machine Prefect's client may drop events (its EventsWorker logs "failed to process item"),
            # which the server then never records; the embedded path's tests check the task runs themselves
            parents = {r.id: client.read_task_run(r.parent_task_run_id) for r in runs if r.parent_task_run_id}
    states = {r.state for r in result.records}
    assert len(result.records) == 12 and states <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states
    by_number = {r.parameters["number"]: r for r in runs if r.parameters.get("sweep_id") == result.records[0].sweep_id}
    assert sorted(by_number) == list(range(12))
    for record in result.records:
        run = by_number[record.number]
        assert run.work_queue_name == ("gpu" if record.config["big"] else "cpu")
        assert run.state is not None
        # a trial the scheduler stopped ends its flow run Completed under the name "Pruned", with the reason
        assert run.state.is_completed() and run.state.name == (
            "Pruned" if record.state == TrialState.PRUNED else "Completed"
        )
        assert parents[run.id].flow_run_id == sweep_run.id
        assert record.task_run_id is not None and record.worker and not record.worker.endswith(f":{os.getpid()}")
    # the workers (and the trial flow runs they started) logged no error and no traceback for stopped trials
    for log in logs:
        with open(log, "rb") as f:
            f.seek(seen[log])
            output = f.read().decode(errors="replace")
        noisy = [line for line in output.splitlines() if "ERROR" in line or "Traceback" in line]
        assert not noisy, f"{log.name}:\n" + "\n".join(noisy[:20])


def test_a_function_workers_cannot_import_is_refused_before_anything_runs(sqlite_url: str) -> None:
    with pytest.raises(TrialFunctionError, match="importable module"):
        sweep(lambda c, t: 0.0, {"q": Float(0, 1)}, storage=sqlite_url, executor=WorkPoolExecutor())


def _run_in_background(**kwargs: object) -> tuple[threading.Thread, dict[str, object]]:
    out: dict[str, object] = {}

    def target() -> None:
        try:
            out["result"] = sweep(**kwargs)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            out["error"] = exc

    context = contextvars.copy_context()  # Prefect's settings (the server's URL) live in context variables
    thread = threading.Thread(target=context.run, args=(target,), daemon=True)
    thread.start()
    return thread, out


def _first_report_pid(url: str, name: str, within: float = 90) -> tuple[int, int]:
    """(trial number, process id) of the first trial that reported its pid in sweep `name`."""
    store = SqlTrialStore(url)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if name in store.sweep_names():
                for report in store.reports(store.sweep_id(name)):
                    if "pid" in report.metrics:
                        return report.number, int(report.metrics["pid"])
            time.sleep(0.1)
    finally:
        store.close()
    raise AssertionError(f"no trial of {name} reported its pid within {within}s")


def _parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_a_killed_worker_leaves_the_trial_recoverable_and_another_worker_retries_it(
    prefect_server: str, workers: dict[str, int], pg_url: str, tmp_path: Path
) -> None:
    from prefect_hpo.deploy import ensure_work_pool

    env = dict(os.environ, PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp_path))
    env.update(PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="0")
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        ensure_work_pool("hpo", {"spare": None})
    spares = [
        subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "hpo", "--work-queue", "spare", "--name", f"spare-{i}"],
            env=env,
            stdout=open(tmp_path / f"spare-{i}.log", "wb"),  # noqa: SIM115 - the process owns it
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        for i in range(2)
    ]
    executor = WorkPoolExecutor(pool="hpo", default_queue="spare", heartbeat_interval=0.5, heartbeat_timeout=4)
    try:
        with temporary_settings({PREFECT_API_URL: prefect_server}):
            thread, out = _run_in_background(
                train=slow_first_attempt,
                space={"slow": Categorical([True])},
                objective="loss",
                strategy="grid",
                budget=Budget(max_trials=1),
                storage=pg_url,
                name="killed",
                executor=executor,
            )
            try:
                _, pid = _first_report_pid(pg_url, "killed")
            except AssertionError:
                logs = "\n".join((tmp_path / f"spare-{i}.log").read_text()[-3000:] for i in range(2))
                errors = [(r.state, r.error, r.reason) for r in getattr(out.get("result"), "records", ())]
                raise AssertionError(f"{out} {errors}\n{logs}") from None
            worker = _parent_pid(pid)  # the trial runs in the flow-run process the worker started
            assert worker in {spare.pid for spare in spares}
            os.kill(worker, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
            thread.join(timeout=120)
        assert not thread.is_alive(), "the sweep did not finish after its worker was killed"
        assert "error" not in out, out.get("error")
        result = out["result"]
        (trial,) = result.records  # type: ignore[attr-defined]
        assert trial.state == TrialState.COMPLETE and trial.attempt == 2 and trial.value == 0.5
    finally:
        for spare in spares:
            if spare.poll() is None:
                spare.kill()
            spare.wait(timeout=10)


def test_a_person_cancelling_a_run_and_a_trial_time_limit(
    prefect_server: str, workers: dict[str, int], pg_url: str
) -> None:
    executor = WorkPoolExecutor(pool="hpo")
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        thread, out = _run_in_background(
            train=slow_first_attempt,
            space={"slow": Categorical([True])},
            objective="loss",
            strategy="grid",
            budget=Budget(max_trials=1),
            storage=pg_url,
            name="cancelled-by-a-person",
            executor=executor,
        )
        _first_report_pid(pg_url, "cancelled-by-a-person")
        with get_client(sync_client=True) as client:
            (run,) = [
                r
                for r in client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["hpo-trial"]))
                )
                if r.name.startswith("cancelled-by-a-person-trial-0")
            ]
            client.set_flow_run_state(run.id, Cancelling(message="stopped from the UI"), force=True)
        thread.join(timeout=90)
        assert not thread.is_alive() and "error" not in out, out
        (trial,) = out["result"].records  # type: ignore[attr-defined]
        assert trial.state == TrialState.PRUNED and trial.attempt == 1  # recorded, and not retried
        assert "was cancelled in Prefect; not retried" in (trial.reason or "")

        timed = sweep(
            slow_first_attempt,
            {"slow": Categorical([True])},
            "loss",
            "grid",
            Budget(max_trials=1, trial_time_limit=3),
            storage=pg_url,
            name="timed-out",
            executor=executor,
        )
        (trial,) = timed.records
        assert trial.state == TrialState.FAIL and "TrialTimeout" in (trial.error or "")
        with get_client(sync_client=True) as client:
            (run,) = [
                r
                for r in client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["hpo-trial"]))
                )
                if r.name.startswith("timed-out-trial-0")
            ]
        assert run.state is not None and run.state.is_cancelled()  # cancelled through the Prefect API


def test_launching_an_attempt_again_returns_its_flow_run(
    prefect_server: str, workers: dict[str, int], pg_url: str
) -> None:
    store = SqlTrialStore(pg_url)
    objectives = (Objective("loss"),)
    sid = store.open_sweep("relaunch", space={}, objectives=[o.to_dict() for o in objectives], strategy="-", budget={})
    record = store.create_trial(sid, 0, {"q": 0.5, "big": False}, "h0")
    spec = TrialSpec(record.id, 0, "relaunch", record.config, objectives, None, True, sweep_id=sid)
    settings = WorkPoolExecutor(pool="hpo")
    with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
        first = WorkPoolTrials(settings, store, "tests.workpool_train:train", pg_url).job(record, spec).launch()
        # a parent that restarted launches the same attempt again, from a fresh executor and store
        again = WorkPoolTrials(settings, SqlTrialStore(pg_url), "tests.workpool_train:train", pg_url)
        again = again.job(record, spec).launch()
        assert again.id == first.id
        assert wait_final(client, first.id).state.is_completed()
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[first.name])))
        assert [r.id for r in runs] == [first.id]  # one flow run for the attempt, however often it is launched
    assert store.trial(sid, 0).state == TrialState.COMPLETE


def test_the_sweep_deployment_runs_a_whole_sweep_on_the_pool(
    prefect_server: str, workers: dict[str, int], pg_url: str
) -> None:
    spec = {
        "name": "from-a-deployment",
        "train": "tests.workpool_train:train",
        "space": {
            "q": {"type": "float", "low": 0.0, "high": 1.0},
            "big": {"type": "categorical", "choices": [True, False]},
        },
        "objective": "loss",
        "strategy": "random",
        "budget": {"max_trials": 4, "max_concurrent": 2},
        "executor": {"kind": "work_pool", "pool": "hpo", "gpu_when": {"big": True}},
        "storage": pg_url,
        "seed": 1,
    }
    parameters = {"spec": spec}
    with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
        started = run_deployment("hpo-run-sweep/hpo-sweep", parameters=parameters, timeout=0)
        sweep_run = wait_final(client, started.id, within=240)  # type: ignore[union-attr]
        assert sweep_run.state.is_completed(), sweep_run.state
        trial_runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[f"from-a-deployment-trial-{n}-1" for n in range(4)])
            )
        )
    store = SqlTrialStore(pg_url)
    records = store.trials(store.sweep_id("from-a-deployment"))
    assert len(records) == 4 and all(r.state == TrialState.COMPLETE for r in records)
    queues = {r.name: r.work_queue_name for r in trial_runs}
    for r in records:
        assert queues[f"from-a-deployment-trial-{r.number}-1"] == ("gpu" if r.config["big"] else "cpu")


def test_population_based_training_passes_checkpoints_between_flow_runs(
    prefect_server: str, workers: dict[str, int], pg_url: str, tmp_path: Path
) -> None:
    import cloudpickle

    from benchmarks.problems import noisy_sgd_trial

    checkpoints = str(tmp_path / "checkpoints")
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        result = sweep(
            noisy_sgd_trial,
            {"lr": Float(1e-3, 0.5, log=True)},
            "loss",
            budget=Budget(max_trials=4, max_concurrent=2),
            storage=pg_url,
            name="pbt-on-workers",
            strategy={"type": "pbt", "population": 2, "interval": 2, "generations": 2, "quantile": 0.5},
            seed=0,
            executor=WorkPoolExecutor(pool="hpo"),
            checkpoints=checkpoints,
        )
    records = {r.number: r for r in result.records}
    assert len(records) == 4 and all(r.state == TrialState.COMPLETE for r in records.values())
    assert all(r.worker and not r.worker.endswith(f":{os.getpid()}") for r in records.values())  # on the workers
    second = [r for r in records.values() if r.lineage and r.lineage["generation"] == 1]
    assert len(second) == 2 and sum("exploited" in (r.lineage or {}) for r in second) == 1
    for record in second:  # each went on from its parent's checkpoint, written by another flow run
        with open(f"{result.checkpoint_path(record.number)}/checkpoint.pkl", "rb") as f:
            state = cloudpickle.load(f)
        assert record.lineage is not None
        assert state["step"] == 4 and state["path"] == [record.lineage["parent"], record.number]


def test_a_password_never_reaches_prefect_on_a_work_pool(
    prefect_server: str, workers: dict[str, int], pg_password_url: tuple[str, str]
) -> None:
    """The store is named by a Secret block: the parent resolves it, each trial resolves it on its worker,
    and no flow run, task run, log, artifact or event on the server holds the password."""
    url, password = pg_password_url
    block = f"hpo-pool-db-{uuid.uuid4().hex[:8]}"
    space = {"q": {"type": "float", "low": 0, "high": 1}}
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        Secret(value=url).save(block)
        result = sweep(
            train,
            {"q": Float(0.0, 1.0), "big": Categorical([False])},
            "loss",
            "random",
            Budget(max_trials=4, max_concurrent=2),
            storage=f"block:{block}",
            name="pool-secret",
            seed=0,
            executor=WorkPoolExecutor(pool="hpo"),
        )
        # the sweep deployment's form: the server checks a run's parameters against SweepSpec's schema and
        # refuses a password before it stores anything
        spec = {"name": "pool-secret-spec", "train": "tests.workpool_train:train", "space": space, "storage": url}
        with pytest.raises(PrefectHTTPStatusError, match="409"):
            run_deployment("hpo-run-sweep/hpo-sweep", parameters={"spec": spec}, timeout=0)
        flush_to_server()
        with get_client(sync_client=True) as client:
            (parent,) = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["pool-secret"]))
            )
            wait_for_events(client, "prefect.flow-run.Completed", 1, f"prefect.flow-run.{parent.id}")
            trial_runs = [r for r in client.read_flow_runs() if r.name.startswith("pool-secret-trial-")]
            records = server_records(client)
    assert len(result.records) == 4 and {r.state for r in result.records} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert parent.parameters["options"]["storage"] == f"block:{block}"
    assert parent.parameters["storage_url"] == "**********"
    assert len(trial_runs) == 4 and {r.parameters["storage"] for r in trial_runs} == {f"block:{block}"}
    assert not [r for r in records["flow runs"] if "pool-secret-spec" in r]  # no flow run was created for it
    assert leaks(records, password) == {}


def test_gpu_trials_claim_their_hosts_devices_without_over_packing(
    prefect_server: str, workers: dict[str, int], worker_home: Path, pg_url: str, tmp_path: Path
) -> None:
    """Two GPU hosts on the `gpu` queue: the module's `gpu` worker (GPUs 0 and 1) and a second worker started
    here with an inventory of its own (GPU 0) and its own lock folder. Trials share each host's devices by their
    requests, each flow run sees only its own devices, and a trial asking for more than its host has fails with
    the host's word, once (not retried)."""
    from tests.executors.test_resources_local import logged, most_held
    from tests.resources_train import holds_devices

    log = tmp_path / "runs.jsonl"
    space = {
        "size": Categorical([0.5, 1, 4]),
        "i": Categorical([0, 1]),
        "dies": Categorical([-1]),
        "seconds": Categorical([1.5]),
        "log": Categorical([str(log)]),
    }
    second_host = {"CUDA_VISIBLE_DEVICES": "0", "PREFECT_HPO_DEVICE_LOCKS": str(tmp_path / "locks-b")}
    env = dict(os.environ, PREFECT_API_URL=prefect_server, PREFECT_HOME=str(worker_home), **second_host)
    env.update(PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="0")
    with open(tmp_path / "worker-b.log", "wb") as out:
        worker_b = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "hpo", "--work-queue", "gpu", "--name", "worker-gpu-b"],
            env=env,
            stdout=out,
            stderr=out,
            cwd=ROOT,
        )
    try:
        with temporary_settings({PREFECT_API_URL: prefect_server}):
            result = sweep(
                holds_devices,
                space,
                "loss",
                "grid",
                Budget(max_trials=6, max_concurrent=4),
                storage=pg_url,
                name="gpu-leases",
                executor=WorkPoolExecutor(pool="hpo"),
                resources=lambda c: {"gpu": c["size"]},
                max_retries=2,
            )
    finally:
        stop(worker_b)
    by_size = {size: [r for r in result.records if r.config["size"] == size] for size in (0.5, 1, 4)}
    assert {r.state for r in by_size[0.5] + by_size[1]} == {TrialState.COMPLETE}
    for record in by_size[4]:
        assert record.state == TrialState.FAIL and record.attempt == 1
        # whichever host's worker took it (2 GPUs or 1) says so, and where to send it
        said = re.search(r"resources\['gpu'\]=4 but this machine has (\d) GPU\(s\)", record.reason or "")
        assert said is not None and said.group(1) in {"1", "2"}, record.reason
        assert "send it to a queue whose workers have enough GPUs" in (record.reason or "")
    runs = logged(log)
    assert len(runs) == 4
    for run in runs:
        has = {"0"} if run["host"] == second_host["PREFECT_HPO_DEVICE_LOCKS"] else {"0", "1"}
        assert run["cuda"] == ",".join(run["devices"]) and set(run["devices"]) <= has
        assert len(run["devices"]) == 1
    assert max(most_held(runs).values()) <= 1.0
    held = {r.number: r.devices for r in result.records if r.state == TrialState.COMPLETE}
    assert {n: tuple(r["devices"]) for r in runs for n in [r["number"]]} == held  # recorded in the store
