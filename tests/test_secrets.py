"""No credential reaches Prefect: storage named by reference (`env:`, `block:`), a literal URL kept out.

The end-to-end test runs sweeps in a process of their own against a real Prefect server, on a PostgreSQL
store reached as a role that logs in with a password, then reads back every flow run (parameters
included), task run, log, artifact and event the server holds and finds the password in none of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pydantic
import pytest
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_hpo import Budget, Float, SqlTrialStore, load_result, sweep
from prefect_hpo.cli import main
from prefect_hpo.errors import StoreError
from prefect_hpo.executors.settings import WorkPoolExecutor
from prefect_hpo.spec import SweepSpec
from prefect_hpo.storage_refs import resolve
from prefect_hpo.store.urls import has_credentials, mask_url
from tests.prefect_records import leaks, server_records, wait_for_events
from tests.servers import start_prefect_server
from tests.workpool_train import train as importable_train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server of this module's own; its event persister flushes every half second."""
    env = {"PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5"}
    with start_prefect_server(tmp_path_factory.mktemp("prefect-secrets"), env) as url:
        yield url


class TestMasking:
    def test_a_password_in_the_query_is_masked_and_counts_as_a_credential(self) -> None:
        url = "postgresql+psycopg://hpo@db.example/hpo?sslmode=require&password=hunter2"
        assert mask_url(url) == "postgresql+psycopg://hpo@db.example/hpo?password=***&sslmode=require"
        assert has_credentials(url) and has_credentials("postgresql+psycopg://hpo:hunter2@db/hpo")
        assert not has_credentials("postgresql+psycopg://hpo@db/hpo") and not has_credentials("sqlite:///x.db")


class TestEnvReference:
    def test_resolves_to_the_variable_s_url_or_path(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("HPO_TEST_DB_URL", f"sqlite:///{tmp_path / 'a.db'}")
        assert resolve("env:HPO_TEST_DB_URL") == f"sqlite:///{tmp_path / 'a.db'}"
        monkeypatch.setenv("HPO_TEST_DB_URL", str(tmp_path / "b.db"))  # a path, as `storage=` takes one
        assert resolve("env:HPO_TEST_DB_URL") == f"sqlite:///{tmp_path / 'b.db'}"

    def test_an_unset_variable_is_named_with_the_fix(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("HPO_TEST_UNSET", raising=False)
        with pytest.raises(StoreError, match=r"storage 'env:HPO_TEST_UNSET': the environment variable HPO_TEST_UNSET"):
            sweep(importable_train, {"q": Float(0, 1)}, storage="env:HPO_TEST_UNSET", validate_only=True)
        with pytest.raises(StoreError, match="names no env"):
            resolve("env:")

    def test_a_sweep_runs_on_it(self, server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("HPO_TEST_DB_URL", f"sqlite:///{tmp_path / 'hpo.db'}")
        with temporary_settings({PREFECT_API_URL: server}):
            result = sweep(
                importable_train,
                {"q": Float(0, 1)},
                budget=Budget(max_trials=3),
                storage="env:HPO_TEST_DB_URL",
                name="by-env",
            )
        store = SqlTrialStore(f"sqlite:///{tmp_path / 'hpo.db'}")
        try:
            assert len(store.trials(store.sweep_id("by-env"))) == len(result.records) == 3
        finally:
            store.close()
        # the CLI and load_result take the same reference
        assert main(["status", "by-env", "--storage", "env:HPO_TEST_DB_URL"]) == 0
        assert len(load_result("by-env", "env:HPO_TEST_DB_URL").records) == 3


class TestBlockReference:
    def test_resolves_to_the_secret_s_value(self, server: str, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'hpo.db'}"
        name = f"hpo-db-{uuid.uuid4().hex[:8]}"
        with temporary_settings({PREFECT_API_URL: server}):
            Secret(value=url).save(name)
            assert resolve(f"block:{name}") == url

    def test_a_missing_block_is_named_with_the_fix(self, server: str) -> None:
        with temporary_settings({PREFECT_API_URL: server}):
            with pytest.raises(StoreError, match=r"no Prefect Secret block named 'hpo-no-such-block' on http"):
                resolve("block:hpo-no-such-block")
            with pytest.raises(StoreError, match="no Prefect Secret block named 'hpo-no-such-block'"):
                sweep(importable_train, {"q": Float(0, 1)}, storage="block:hpo-no-such-block", validate_only=True)


class TestLiteralPasswords:
    def test_a_work_pool_sweep_refuses_one_before_anything_runs(self, pg_password_url: tuple[str, str]) -> None:
        url, password = pg_password_url
        with pytest.raises(StoreError, match=r"storage='env:HPO_DB_URL'.*storage='block:hpo-db'") as refused:
            sweep(importable_train, {"q": Float(0, 1)}, storage=url, executor=WorkPoolExecutor(), name="refused")
        assert password not in str(refused.value) and ":***@" in str(refused.value)
        store = SqlTrialStore(url)
        try:
            assert "refused" not in store.sweep_names()
        finally:
            store.close()

    def test_a_sweep_spec_refuses_one_in_python_and_in_its_json_schema(self, pg_password_url: tuple[str, str]) -> None:
        url, password = pg_password_url
        fields = {
            "name": "s",
            "train": "tests.workpool_train:train",
            "space": {"q": {"type": "float", "low": 0, "high": 1}},
        }
        with pytest.raises(pydantic.ValidationError, match="env:HPO_DB_URL") as refused:
            SweepSpec.model_validate({**fields, "storage": url})
        assert password not in str(refused.value)
        # the deployment's form: Prefect's server checks flow-run parameters against this schema before storing them
        schema = SweepSpec.model_json_schema()
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**fields, "storage": url}, schema)
        for fine in ("env:HPO_DB_URL", "block:hpo-db", url.replace(f":{password}@", "@"), None):
            jsonschema.validate({**fields, "storage": fine}, schema)
            assert SweepSpec.model_validate({**fields, "storage": fine}).storage == fine

    @pytest.mark.parametrize("password", ["a/b", "a#b", "a?b", "a@b", "a:b"])
    def test_a_password_with_reserved_characters_is_refused_by_the_schema_too(self, password: str) -> None:
        """Prefect's server checks a deployment run's parameters against the schema before it stores them: a
        password with '/', '#' or '?' (which SQLAlchemy reads as part of the password) must not pass it."""
        url = f"postgresql+psycopg://hpo:{password}@db.example:5432/hpo"
        fields = {
            "name": "s",
            "train": "tests.workpool_train:train",
            "space": {"q": {"type": "float", "low": 0, "high": 1}},
        }
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**fields, "storage": url}, SweepSpec.model_json_schema())
        with pytest.raises(pydantic.ValidationError) as refused:
            SweepSpec.model_validate({**fields, "storage": url})
        assert password not in str(refused.value)


def test_no_password_reaches_prefect_from_local_sweeps(
    server: str, pg_password_url: tuple[str, str], tmp_path: Path
) -> None:
    """Three local sweeps (4 worker processes each): the URL given directly, by `env:` and by `block:`."""
    url, password = pg_password_url
    block = f"hpo-secret-db-{uuid.uuid4().hex[:8]}"
    with temporary_settings({PREFECT_API_URL: server}):
        Secret(value=url).save(block)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=server, PREFECT_HOME=str(tmp_path), PREFECT_LOGGING_LEVEL="INFO", PYTHONPATH=str(ROOT))
    env.update(PREFECT_HPO_HOME=str(tmp_path / "hpo"), HPO_SECRET_DB_URL=url)
    # names of their own: the session's server also holds the flow runs of other tests' sweeps (one is "by-env")
    runs = {"secret-literal": url, "secret-by-env": "env:HPO_SECRET_DB_URL", "secret-by-block": f"block:{block}"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.secrets_sweep", *(f"{name}={storage}" for name, storage in runs.items())],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["secret-literal", "8", "secret-by-env", "8", "secret-by-block", "8"]
    assert password not in done.stdout + done.stderr  # the terminal too
    with temporary_settings({PREFECT_API_URL: server}), get_client(sync_client=True) as client:
        wait_for_events(client, "prefect.flow-run.Completed", 3)
        records = server_records(client)
        sweeps = {run.name: run.parameters for run in client.read_flow_runs() if run.name in runs}
    assert leaks(records, password) == {}
    shown = {name: parameters["options"]["storage"] for name, parameters in sweeps.items()}  # SweepOptions' JSON
    assert shown["secret-literal"] == mask_url(url) and ":***@" in shown["secret-literal"]
    assert shown["secret-by-env"] == "env:HPO_SECRET_DB_URL"
    assert shown["secret-by-block"] == f"block:{block}"
    assert {p["storage_url"] for p in sweeps.values()} == {"**********"}
    # what was searched is there: INFO logs of the sweeps, their artifacts, their events, their trials' task runs
    assert len(records["logs"]) >= 3 and len(records["artifacts"]) >= 3 and len(records["task runs"]) >= 24
    assert len(records["events"]) >= 30
