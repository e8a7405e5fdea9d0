"""The sweep as a deployment: prefect.yaml against a real server, the UI's form, schedules that continue a sweep."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pydantic
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_hpo import load_result
from prefect_hpo.flows.sweep import hpo_run_sweep
from prefect_hpo.spec import BudgetSpec, ExecutorSpec, SchedulerSpec, SweepSpec
from tests.reporting.test_ui import CHROMIUM, browse
from tests.servers import PREFECT, stop, wait_final

pytestmark = pytest.mark.prefect
ROOT = Path(__file__).resolve().parents[1]


def quadratic(config: dict[str, Any]) -> float:
    return (config["x"] - 0.25) ** 2


def _prefect_cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PREFECT, *args], cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=300)


def _said(done: subprocess.CompletedProcess[str]) -> str:
    """What a CLI printed, on one line (Prefect's CLI wraps its messages to the terminal's width)."""
    return " ".join((done.stdout + done.stderr).split())


def test_prefect_yaml_deploys_the_sweep_with_a_form_and_the_nightly_schedule_apart(
    ui_server: str, tmp_path: Path
) -> None:
    from prefect_hpo.deploy import ensure_work_pool

    with temporary_settings({PREFECT_API_URL: ui_server}):
        ensure_work_pool("hpo")
    env = dict(os.environ, PREFECT_API_URL=ui_server, PREFECT_HPO_PROJECT_DIR=str(ROOT), PREFECT_HOME=str(tmp_path))
    done = _prefect_cli("--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with temporary_settings({PREFECT_API_URL: ui_server}), get_client(sync_client=True) as client:
        on_demand = client.read_deployment_by_name("hpo-run-sweep/hpo-sweep")
        client.read_deployment_by_name("hpo-trial/hpo-trial")
        # `deploy --all` of prefect.yaml schedules nothing: the nightly example is deployed on its own
        assert [d.name for d in client.read_deployments() if d.schedules] == []
    assert on_demand.enforce_parameter_schema  # the server checks every run's spec against the schema
    done = _prefect_cli("--no-prompt", "deploy", "--all", "--prefect-file", "deployments/nightly.yaml", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with temporary_settings({PREFECT_API_URL: ui_server}), get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("hpo-run-sweep/digits-nightly")
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

    # the guide's CLI form: a run without a spec, or with one the schema refuses, is never created
    run = ["deployment", "run", "hpo-run-sweep/hpo-sweep"]
    refused = _prefect_cli(*run, env=env)
    assert refused.returncode != 0 and "'spec' is a required property" in _said(refused)
    bad_path = {"name": "cli", "train": "flows.digits_mlp.train", "space": {"lr": 0.1}}
    refused = _prefect_cli(*run, "--params", json.dumps({"spec": bad_path}), env=env)
    assert refused.returncode != 0 and "'flows.digits_mlp.train' does not match" in _said(refused)
    # a space only our code can judge (low above high): created, and failed by the worker before the sweep starts
    bad_space = dict(
        spec.model_dump(mode="json"), name="cli-bad-space", space={"lr": {"type": "float", "low": 1, "high": 0.1}}
    )
    created = _prefect_cli(*run, "--params", "-", env=env, stdin=json.dumps({"spec": bad_space}))  # the guide's pipe
    assert created.returncode == 0, created.stdout[-3000:] + created.stderr[-3000:]
    with temporary_settings({PREFECT_API_URL: ui_server}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    (bad_run,) = [r for r in runs if (r.parameters.get("spec") or {}).get("name") == "cli-bad-space"]

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
            failed = wait_final(client, bad_run.id, within=300)
    finally:
        stop(worker)
    assert ran.state is not None and ran.state.is_completed(), (tmp_path / "worker.log").read_text()[-3000:]
    assert failed.state is not None and failed.state.is_failed()
    assert "spec.space" in str(failed.state.message) and "low (1) must be below high (0.1)" in str(failed.state.message)
    nightly_result = load_result("digits-nightly", f"sqlite:///{tmp_path / 'hpo-home' / 'hpo.db'}")
    assert len(nightly_result.records) == 10 and nightly_result.stop_reason == "trials_per_run=10 started in this run"
    # digits: a real fit, by a margin no unlucky draw of 10 unseeded TPE trials misses (chance is ln 10 = 2.3)
    assert nightly_result.best_value is not None and nightly_result.best_value < math.log(10) / 2

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


BAD_SPECS = [
    ("space", {"space": {"lr": {"type": "float", "low": 1, "high": 0.1}}}, r"low \(1\) must be below high \(0\.1\)"),
    ("space", {"space": {"act": ["relu", "tanh"]}}, "a bare list is ambiguous"),
    ("space", {"space": {"lr": {"type": "floaty", "low": 0, "high": 1}}}, "unknown type 'floaty'"),
    ("space", {"space": {}}, "at least 1 item"),
    ("objective", {"objective": "val_loss:minimise"}, "mode 'minimise' is not one of"),
    ("scheduler", {"scheduler": {"type": "asha", "max_t": 2, "grace_period": 5}}, "lower grace_period or raise max_t"),
    ("train", {"train": "flows.digits_mlp.train"}, "write 'package.module:function'"),
    ("name", {"name": "-nightly"}, "starting with a letter or digit"),
    ("budget.max_concurrent", {"budget": {"max_concurrent": 0}}, "greater than or equal to 1"),
    ("strategy", {"strategy": "anneal"}, "'grid', 'random', 'tpe'"),
    ("name", {"name": "abc\n"}, "starting with a letter or digit"),
    ("seed", {"seed": -1}, "greater than or equal to 0"),
    ("seed", {"seed": 2**32}, "less than or equal to 4294967295"),
    ("seed", {"seed": "abc"}, "valid integer"),
]


@pytest.mark.parametrize(
    ("field", "change", "message"), BAD_SPECS, ids=[f"{i}-{f}" for i, (f, *_) in enumerate(BAD_SPECS)]
)
def test_a_bad_spec_is_refused_at_validation_with_the_field_named(
    field: str, change: dict[str, Any], message: str
) -> None:
    plain = {"name": "x", "train": "m:f", "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}}, **change}
    with pytest.raises(pydantic.ValidationError) as refused:
        SweepSpec.model_validate(plain)
    (error,) = refused.value.errors()
    assert ".".join(map(str, error["loc"])) == field
    assert re.search(message, error["msg"]), error["msg"]


def test_the_schema_prefect_s_server_checks_refuses_what_the_validators_refuse() -> None:
    """Prefect's server checks a run's parameters against the deployment's JSON schema with Python's `re.search`,
    where `$` also matches before a final newline."""
    schema = SweepSpec.model_json_schema()
    plain = {"name": "x", "train": "m:f", "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}}}
    jsonschema.validate(plain, schema)
    for change in ({"name": "abc\n"}, {"seed": -1}, {"seed": 2**32}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**plain, **change}, schema)


def test_a_good_spec_keeps_its_plain_form() -> None:
    space = {"x": {"type": "float", "low": 0.0, "high": 1.0}, "opt": {"type": "categorical", "choices": ["a", "b"]}}
    spec = SweepSpec(name="x", train="m:f", space=space, objective=["loss:min", "acc:max"])
    assert spec.model_dump()["space"] == space and spec.objective == ["loss:min", "acc:max"]
    assert SchedulerSpec().to_option() is None
    assert SchedulerSpec(type="asha", max_t=9).to_option() == {"type": "asha", "max_t": 9}


def test_the_sweep_flow_fails_on_a_bad_space_before_its_body_runs(sqlite_url: str) -> None:
    """Prefect validates the flow's parameter before the body: the training module is never imported, no
    sweep is stored, and the run's message names the field."""
    spec = {
        "name": "bad-space",
        "train": "tests.never_imported_module:train",
        "space": {"lr": {"type": "float", "low": 1, "high": 0.1}},
        "storage": sqlite_url,
    }
    state = hpo_run_sweep(spec, return_state=True)  # type: ignore[arg-type]  # as a deployment passes it: JSON
    assert state.is_failed()
    assert "spec.space" in str(state.message) and "low (1) must be below high (0.1)" in str(state.message)
    assert "tests.never_imported_module" not in sys.modules
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()  # the store was never opened
