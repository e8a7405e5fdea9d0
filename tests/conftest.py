"""Shared fixtures: quiet Prefect on a reusable home, SQLite files, a fresh PostgreSQL schema per run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Prefect reads its settings from the environment when a flow first runs: set them before.
os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect_test_home"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
os.environ.setdefault("PREFECT_HPO_HOME", str(ROOT / ".prefect_test_home" / "hpo"))

PG_ADMIN_URL = os.environ.get("PREFECT_HPO_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hpo.db'}"


def pg_admin(create: str) -> Any:
    """An autocommit engine on the local PostgreSQL after running `create` (CREATE SCHEMA / DATABASE).

    Where no PostgreSQL answers, the calling test skips, except under CI=true, where it fails.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(create))
    except OperationalError as exc:
        engine.dispose()
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"PostgreSQL at {PG_ADMIN_URL} must answer under CI: {exc}") from exc
        pytest.skip(f"no PostgreSQL answers at {PG_ADMIN_URL}; start it to run these tests")
    return engine


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str]:
    """A URL whose search_path is a fresh schema in the local PostgreSQL, dropped afterwards."""
    from sqlalchemy import text

    schema = f"hpo_test_{uuid.uuid4().hex[:10]}"
    engine = pg_admin(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_ADMIN_URL else "?"
    try:
        yield f"{PG_ADMIN_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def pg_url(pg_schema_url: str) -> Iterator[str]:
    """PostgreSQL store URL with empty tables for each test."""
    from sqlalchemy import create_engine, text

    from prefect_hpo.store import schema

    yield pg_schema_url
    engine = create_engine(pg_schema_url)
    schema.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {schema.VERSION_TABLE}"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on a SQLite file and on the local PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hpo.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`prefect server start` with its UI, on its own SQLite database; its API URL (the UI is at its root)."""
    from tests.servers import start_prefect_server

    with start_prefect_server(tmp_path_factory.mktemp("prefect-ui"), ui=True) as url:
        yield url


def pytest_configure(config: pytest.Config) -> None:
    """Start the worker fork server once, with Prefect and prefect_hpo's API preloaded.

    prefect_hpo preloads only the user's main module, the training function's module and its trial
    runtime; the fork server is one per process and keeps the list of its start. In this test process
    every test module's training functions live in a module that imports Prefect, so without this each
    worker of each sweep would import Prefect again (about a second of CPU each). Tests that run a sweep
    in a script of its own (tests/test_faults.py, tests/test_resume.py) keep prefect_hpo's own list."""
    import multiprocessing
    import multiprocessing.forkserver

    if "forkserver" in multiprocessing.get_all_start_methods():
        multiprocessing.get_context("forkserver").set_forkserver_preload(
            ["prefect_hpo.api", "prefect_hpo.executors.runners"]
        )
        multiprocessing.forkserver.ensure_running()
