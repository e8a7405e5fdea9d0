"""The sweep as a deployment: prefect.yaml against a real server, the UI's form, schedules that continue a sweep."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pydantic
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.sweep_flow import hpo_run_sweep
from prefect_hpo import load_result
from prefect_hpo.spec import BudgetSpec, ExecutorSpec, SchedulerSpec, SweepSpec
from tests.reporting.test_ui import CHROMIUM, browse
from tests.servers import PREFECT, stop, wait_final

pytestmark = pytest.mark.prefect
ROOT = Path(__file__).resolve().parents[1]


def quadratic(config: dict[str, Any]) -> float:
    return (config["x"] - 0.25) ** 2


def test_prefect_yaml_deploys_the_sweep_with_a_form_and_a_nightly_schedule_that_runs(
    ui_server: str, tmp_path: Path
) -> None:
    from prefect_hpo.deploy import ensure_work_pool

    with temporary_settings({PREFECT_API_URL: ui_server}):
        ensure_work_pool("hpo")
    env = dict(os.environ, PREFECT_API_URL=ui_server, PREFECT_HPO_PROJECT_DIR=str(ROOT), PREFECT_HOME=str(tmp_path))
    deploy = [PREFECT, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"]
    done = subprocess.run(deploy, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with temporary_settings({PREFECT_API_URL: ui_server}), get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("hpo-run-sweep/digits-nightly")
        on_demand = client.read_deployment_by_name("hpo-run-sweep/hpo-sweep")
        client.read_deployment_by_name("hpo-trial/hpo-trial")
    (schedule,) = nightly.schedules
    assert schedule.schedule.cron == "0 2 * * *"  # type: ignore[union-attr]
    spec = SweepSpec.model_validate(nightly.parameters["spec"])  # what the schedule will pass is a valid spec
    assert spec.budget.trials_per_run == 10 and spec.scheduler.type == "asha"
    # the parameter schema Prefect's UI builds its form from: the spec with its nested sections
    schema = on_demand.parameter_openapi_schema
    definitions = schema.get("definitions") or schema.get("$defs") or {}
    assert {"SweepSpec", "BudgetSpec", "SchedulerSpec", "ExecutorSpec"} <= set(definitions)
    assert "trials_per_run" in definitions["BudgetSpec"]["properties"]
    assert definitions["SweepSpec"]["properties"]["strategy"]["enum"][:3] == ["grid", "random", "tpe"]

    # trigger the nightly run now, as its schedule would, and let a real worker run it
    with temporary_settings({PREFECT_API_URL: ui_server}), get_client(sync_client=True) as client:
        triggered = client.create_flow_run_from_deployment(nightly.id, work_queue_name="cpu")
    worker_env = dict(env, PREFECT_HPO_HOME=str(tmp_path / "hpo-home"), PREFECT_WORKER_QUERY_SECONDS="1")
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "hpo", "--work-queue", "cpu", "--run-once"],
        cwd=ROOT,
        env=worker_env,
        stdout=open(tmp_path / "worker.log", "wb"),  # noqa: SIM115 - the process owns it
        stderr=subprocess.STDOUT,
    )
    try:
        with temporary_settings({PREFECT_API_URL: ui_server}), get_client(sync_client=True) as client:
            ran = wait_final(client, triggered.id, within=300)
    finally:
        stop(worker)
    assert ran.state is not None and ran.state.is_completed(), (tmp_path / "worker.log").read_text()[-3000:]
    nightly_result = load_result("digits-nightly", f"sqlite:///{tmp_path / 'hpo-home' / 'hpo.db'}")
    assert len(nightly_result.records) == 10 and nightly_result.stop_reason == "trials_per_run=10 started in this run"
    assert nightly_result.best_value is not None and nightly_result.best_value < 0.5  # digits: a real fit

    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError("chromium must be installed under CI (scripts/browser.sh installs it)")
        return
    # the UI's custom-run page really renders the spec as a form
    page = ui_server.removesuffix("/api") + f"/deployments/deployment/{on_demand.id}/run"
    dom = browse(page, tmp_path / "chromium-form", "--dump-dom").stdout
    for label in ("Trials Per Run", "Max Concurrent", "Gpu When", "Reduction Factor"):
        assert label in dom, f"{label!r} not on the run form"


def test_each_scheduled_run_continues_the_same_named_sweep(sqlite_url: str) -> None:
    spec = SweepSpec(
        name="nightly",
        train="tests.test_deployments:quadratic",
        space={"x": {"type": "float", "low": -1.0, "high": 1.0}},
        strategy="tpe",
        budget=BudgetSpec(max_trials=None, trials_per_run=3),
        executor=ExecutorSpec(workers="threads"),
        storage=sqlite_url,
        seed=0,
    )
    first = hpo_run_sweep(spec)
    second = hpo_run_sweep(spec.model_dump())  # as a deployment passes it: plain JSON
    assert first["trials"] == 3 and second["trials"] == 6
    assert second["stop_reason"] == "trials_per_run=3 started in this run"
    result = load_result("nightly", sqlite_url)
    assert [r.number for r in result.records] == list(range(6))
    # the second run proposed new configurations, not the first run's again from the same seed
    assert all(r.state.value == "COMPLETE" for r in result.records)
    assert second["best_value"] == result.best_value == min(r.value for r in result.records)  # type: ignore[type-var]


def test_a_bad_spec_names_the_field() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"budget\.max_concurrent"):
        SweepSpec(name="x", train="m:f", space={}, budget={"max_concurrent": 0})  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError, match="strategy"):
        SweepSpec(name="x", train="m:f", space={}, strategy="anneal")  # type: ignore[arg-type]
    assert SchedulerSpec().to_option() is None
    assert SchedulerSpec(type="asha", max_t=9).to_option() == {"type": "asha", "max_t": 9}
