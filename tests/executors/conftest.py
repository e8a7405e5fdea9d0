"""A real Prefect server and real workers, started as processes and stopped by their pids."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.servers import PREFECT, start_prefect_server, stop

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the Prefect server itself (asyncpg URL), dropped afterwards.

    PostgreSQL rather than SQLite: trials on several workers write to the server at once, and the
    SQLite-backed server answers such load with 'database is locked' and 503s.
    """
    from sqlalchemy import text

    from tests.conftest import PG_ADMIN_URL, pg_admin

    name = f"prefect_server_{uuid.uuid4().hex[:10]}"
    engine = pg_admin(f'CREATE DATABASE "{name}"')
    url = make_url(PG_ADMIN_URL).set(drivername="postgresql+asyncpg", database=name, query={})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory, server_database: str) -> Iterator[str]:
    """`prefect server start` on a free loopback port, on its own PostgreSQL database; its API URL."""
    home = tmp_path_factory.mktemp("prefect-server")
    with start_prefect_server(home, {"PREFECT_SERVER_DATABASE_CONNECTION_URL": server_database}) as url:
        yield url


@pytest.fixture(scope="module")
def worker_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workers' PREFECT_HOME; each worker's output (its flow runs' too) goes to worker-<queue>.log there."""
    return tmp_path_factory.mktemp("prefect-workers")


@pytest.fixture(scope="module")
def workers(prefect_server: str, worker_home: Path) -> Iterator[dict[str, int]]:
    """The `hpo` pool with `gpu` (4 trials at once) and `cpu` queues, the trial deployment, and one worker per
    queue. The `gpu` worker's host declares two GPUs (CUDA_VISIBLE_DEVICES=0,1: CI has none) and keeps its device
    locks in a folder of its own."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from prefect_hpo.deploy import setup_work_pool

    with temporary_settings({PREFECT_API_URL: prefect_server}):
        setup_work_pool(ROOT, pool="hpo", gpu_slots=4)
    home = worker_home
    env = dict(os.environ, PREFECT_API_URL=prefect_server, PREFECT_HOME=str(home))
    env.update(PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="0")
    procs = {}
    hosts = {
        "gpu": {"CUDA_VISIBLE_DEVICES": "0,1", "PREFECT_HPO_DEVICE_LOCKS": str(home / "locks-gpu")},
        "cpu": {"CUDA_VISIBLE_DEVICES": ""},
    }
    for queue in ("gpu", "cpu"):
        log = open(home / f"worker-{queue}.log", "wb")  # noqa: SIM115 - the process owns it
        procs[queue] = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "hpo", "--work-queue", queue, "--name", f"worker-{queue}"],
            env={**env, **hosts[queue]},
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + 90
        with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
            while len({w.name for w in client.read_workers_for_work_pool("hpo")}) < 2:
                for queue, proc in procs.items():
                    if proc.poll() is not None:
                        raise RuntimeError(f"worker {queue} exited: {(home / f'worker-{queue}.log').read_text()}")
                if time.monotonic() > deadline:
                    raise RuntimeError("workers did not register with the pool within 90 s")
                time.sleep(0.2)
        yield {queue: proc.pid for queue, proc in procs.items()}
    finally:
        for proc in procs.values():
            stop(proc)
