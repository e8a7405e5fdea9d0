"""One-call set-up of a work pool for sweeps: the pool, its queues, the trial and sweep deployments, idempotently."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

# Module paths (Prefect's form without a colon): a worker imports them from the installed package, whatever
# its working folder holds.
TRIAL_ENTRYPOINT = "prefect_hpo.flows.trial.hpo_trial"
SWEEP_ENTRYPOINT = "prefect_hpo.flows.sweep.hpo_run_sweep"


def ensure_work_pool(pool: str = "hpo", queues: Mapping[str, int | None] | None = None, gpu_slots: int = 1) -> None:
    """Create the process work pool `pool` and its queues (name -> concurrency limit) unless they exist.

    By default: `gpu`, limited to `gpu_slots` trials at once (the GPU trials all GPU hosts run together: e.g. 8
    for two hosts of 4 GPUs with one trial per GPU), and `cpu`, unlimited."""
    wanted = {"gpu": gpu_slots, "cpu": None} if queues is None else queues
    with get_client(sync_client=True) as client:
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        for name, limit in wanted.items():
            # an existing queue keeps the settings its operator gave it
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_work_queue(name=name, work_pool_name=pool, concurrency_limit=limit)


def deploy_flow(
    entrypoint: str, project_dir: str | Path = ".", pool: str = "hpo", name: str = "hpo-trial", queue: str = "cpu"
) -> str:
    """Deploy the flow at `entrypoint`: a module path (`package.module.flow`), or a file in `project_dir`
    (`path/to/file.py:flow`).

    `project_dir` is the folder the workers run flow runs from: the training code's package is imported from
    there (or is installed). No image and no remote storage: process workers on machines that share the
    folder run it there. Returns the deployment id; deploying again updates it.
    """
    source = str(Path(project_dir).resolve())
    loaded = flow.from_source(source=source, entrypoint=entrypoint)
    deployment_id = loaded.deploy(  # type: ignore[union-attr]
        name=name, work_pool_name=pool, work_queue_name=queue, build=False, push=False, print_next_steps=False
    )
    return str(deployment_id)


def deploy_trial_flow(
    project_dir: str | Path = ".", pool: str = "hpo", name: str = "hpo-trial", default_queue: str = "cpu"
) -> str:
    """Deploy the generic trial flow (`hpo-trial/hpo-trial`), which the sweep launches once per trial."""
    return deploy_flow(TRIAL_ENTRYPOINT, project_dir, pool, name, default_queue)


def deploy_sweep_flow(project_dir: str | Path = ".", pool: str = "hpo", name: str = "hpo-sweep") -> str:
    """Deploy the sweep flow (`hpo-run-sweep/hpo-sweep`): a sweep started from the UI, a schedule or the API."""
    return deploy_flow(SWEEP_ENTRYPOINT, project_dir, pool, name, "cpu")


def setup_work_pool(
    project_dir: str | Path = ".", pool: str = "hpo", queues: Mapping[str, int | None] | None = None, gpu_slots: int = 1
) -> str:
    """The one line: the pool, its `gpu` and `cpu` queues, the trial and the sweep deployments.

    `project_dir`: the folder workers start flow runs in, on every worker machine; training functions are
    imported from there unless installed. The flows themselves come with prefect_hpo. Returns the trial
    deployment's id.
    """
    ensure_work_pool(pool, queues, gpu_slots)
    deploy_sweep_flow(project_dir, pool)
    return deploy_trial_flow(project_dir, pool)
