"""Shared fixtures: quiet Prefect on a reusable home, SQLite files, a fresh PostgreSQL schema per run."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Under pytest-xdist each worker process runs a share of the test files: its own Prefect home (the temporary
# server's SQLite database is one writer's) and its own marker below (a worker's end must not take the other's
# servers for leftovers).
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
HOMES = ROOT / ".prefect_test_home"
HOME = HOMES / (WORKER or "main")
HOME.mkdir(parents=True, exist_ok=True)  # Prefect creates its home without its parents
# Prefect reads its settings from the environment when a flow first runs: set them before. A worker inherits the
# controlling process's environment, defaults included: it replaces those with its own.
for name, value, default in (
    ("PREFECT_HOME", HOME, HOMES / "main"),
    ("PREFECT_HPO_HOME", HOME / "hpo", HOMES / "main" / "hpo"),
):
    if os.environ.get(name) in (None, str(default)):
        os.environ[name] = str(value)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")

# Every process the suite starts carries this in its environment (children inherit it), so that the end of
# the session can find any that outlived it: a server, a worker, a sweep's helper left running is a bug.
SUITE_MARKER = "PREFECT_HPO_TEST_SUITE"
if WORKER:
    os.environ[SUITE_MARKER] = f"{uuid.uuid4().hex}-{WORKER}"
os.environ.setdefault(SUITE_MARKER, uuid.uuid4().hex)
# ... and the test that was running when it started, to say which test left it.
TEST_MARKER = "PREFECT_HPO_TEST_NODE"

PG_ADMIN_URL = os.environ.get("PREFECT_HPO_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _mark_started_processes(request: pytest.FixtureRequest) -> None:
    """Processes started from here on carry the running test's id (see TEST_MARKER)."""
    os.environ[TEST_MARKER] = request.node.nodeid


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


@pytest.fixture(scope="session")
def pg_password_url() -> Iterator[tuple[str, str]]:
    """(URL, password) of a store reached as a PostgreSQL role that logs in with a password.

    The role owns a schema of its own name, which PostgreSQL's default search_path ("$user") picks, so the
    URL is the plain `postgresql+psycopg://role:password@host:port/db` a user writes. The password is
    unique to the run, so that finding it anywhere can only mean it leaked there.
    """
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    tag = uuid.uuid4().hex[:10]
    role, password = f"hpo_secret_{tag}", f"s3cretPW{tag}"
    engine = pg_admin(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{role}" AUTHORIZATION "{role}"'))
    url = make_url(PG_ADMIN_URL).set(username=role, password=password, query={})
    try:
        yield url.render_as_string(hide_password=False), password
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{role}" CASCADE'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        engine.dispose()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a process the suite started is still alive at its end (then stop it).

    What ends with this process at its exit is stopped first, as it would be then: its temporary Prefect
    server (in-process sweeps start one) and its fork server; multiprocessing's resource tracker, a child
    that leaves when this process closes its end of the pipe, is not counted. Processes on their way out
    get 15 s."""
    from prefect.server.api.server import SubprocessASGIServer

    from prefect_hpo.head_start import _end_fork_server
    from tests.processes import left_behind
    from tests.servers import flush_to_server

    if SubprocessASGIServer._instances:
        flush_to_server()  # the logs and events still queued, while their server takes them
    for server in list(SubprocessASGIServer._instances.values()):
        server.stop()
    _end_fork_server()

    def counted(proc: Any) -> bool:  # the resource tracker leaves after this process: not waited for
        return not (proc.ppid() == os.getpid() and "multiprocessing.resource_tracker" in " ".join(proc.cmdline()))

    left = left_behind(SUITE_MARKER, os.environ[SUITE_MARKER], within=15.0, which=counted)
    if not left:
        return
    lines = [f"  pid {p.pid} (from {_started_by(p)}): {' '.join(p.cmdline())[:200]}" for p in left]
    session.config.get_terminal_writer().line(
        "\nprocesses the test suite started are still running at its end (stopped now):\n" + "\n".join(lines), red=True
    )
    for proc in left:
        with contextlib.suppress(Exception):
            proc.kill()
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _started_by(proc: Any) -> str:
    with contextlib.suppress(Exception):
        return str(proc.environ().get(TEST_MARKER, "the session's start"))
    return "?"
