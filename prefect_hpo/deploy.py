"""One-call set-up of a work pool for sweeps: the pool, its queues and the trial deployment, idempotently."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

TRIAL_ENTRYPOINT = "flows/trial_flow.py:hpo_trial"


def ensure_work_pool(pool: str = "hpo", queues: Mapping[str, int | None] | None = None) -> None:
    """Create the process work pool `pool` and its queues (name -> concurrency limit) unless they exist."""
    wanted = {"gpu": 1, "cpu": None} if queues is None else queues
    with get_client(sync_client=True) as client:
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        for name, limit in wanted.items():
            # an existing queue keeps the settings its operator gave it
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_work_queue(name=name, work_pool_name=pool, concurrency_limit=limit)


def deploy_trial_flow(
    project_dir: str | Path = ".", pool: str = "hpo", name: str = "hpo-trial", default_queue: str = "cpu"
) -> str:
    """Deploy the trial flow from `project_dir` (which holds flows/ and the training code) to `pool`.

    No image and no remote storage: process workers on machines that share the folder run it
    there. Returns the deployment id; deploying again updates it.
    """
    source = str(Path(project_dir).resolve())
    trial_flow = flow.from_source(source=source, entrypoint=TRIAL_ENTRYPOINT)
    deployment_id = trial_flow.deploy(  # type: ignore[union-attr]
        name=name, work_pool_name=pool, work_queue_name=default_queue, build=False, push=False, print_next_steps=False
    )
    return str(deployment_id)


def setup_work_pool(
    project_dir: str | Path = ".", pool: str = "hpo", queues: Mapping[str, int | None] | None = None
) -> str:
    """The one line: the pool, its `gpu` and `cpu` queues, and the trial deployment. Returns the deployment id."""
    ensure_work_pool(pool, queues)
    return deploy_trial_flow(project_dir, pool)
