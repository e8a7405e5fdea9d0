"""Where trials run, as the user says it: `sweep(executor=...)`'s settings, frozen values with no machinery.

`WorkPoolExecutor` and `ClusterExecutor` are settings, not executors: the sweep flow turns them into
the executor that runs one sweep's trials (`WorkPoolTrials`, `ClusterTrials`; without settings,
`LocalTrials`). Keeping them apart lets the API, the deployment form and ClearML's vocabulary name
where trials run without importing how they are run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from prefect.task_runners import TaskRunner  # at run time: Prefect's parameter check reads this annotation

from prefect_hpo.arguments import check_integer, is_number
from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.records import Config

#: Where the local executor runs each trial's work: a worker process of its own, or a thread of the parent.
WorkerKind = Literal["processes", "threads"]

#: What each trial needs ({"gpu": 1}), or a function of its configuration that says it.
Resources = Mapping[str, float] | Callable[[Config], Mapping[str, float]]


@dataclass(frozen=True)
class WorkPoolExecutor:
    """Where trials run: `pool`'s queues, through the trial deployment (settings; `WorkPoolTrials` runs them).

    Args:
        pool: the work pool's name.
        deployment: the trial flow's deployment, "flow-name/deployment-name".
        queues: resource name -> queue; a trial that asks for any of a resource goes to its
            queue (first match), every other trial to `default_queue`.
        default_queue: the queue of trials that ask for none of the listed resources.
        resources: what each trial needs, e.g. {"gpu": 1}, or a function of the config (default: the
            sweep's `resources`).
        poll_interval: seconds between the sweep's looks at its trials in flight (one store query for all
            of them; a flow run's state is read only when its trial has gone silent or was asked to stop).
            Default: 0.5 with a flow run per trial, 0.1 with runners.
        heartbeat_interval: seconds between a running trial's heartbeats in the store.
        heartbeat_timeout: a running trial silent this long is taken for dead (its worker died):
            its flow run is marked Crashed and the trial FAIL_RECOVERABLE, to be retried.
        runners: 0 (the default): each trial is a flow run of its own. N > 0: up to N long-lived runner
            flow runs of the same deployment take the trials one after another from the store, each trial
            a task run of its runner (no worker poll, process start or imports per trial: for many short
            trials). Launched on the queues the trials ask for; a runner that dies mid-trial leaves it
            FAIL_RECOVERABLE, retried by another.
        runner_idle_timeout: seconds a runner waits without a trial before it ends (the sweep launches
            another when trials wait again).
        runner_max_trials: trials a runner runs before it ends and another takes its place (None: no limit).
        runner_max_seconds: seconds a runner takes trials for before it ends (None: no limit).
    """

    pool: str = "hpo"
    deployment: str = "hpo-trial/hpo-trial"
    queues: Mapping[str, str] = field(default_factory=lambda: {"gpu": "gpu"})
    default_queue: str = "cpu"
    resources: Resources | None = None
    poll_interval: float | None = None
    heartbeat_interval: float = 2.0
    heartbeat_timeout: float = 15.0
    runners: int = 0
    runner_idle_timeout: float = 60.0
    runner_max_trials: int | None = None
    runner_max_seconds: float | None = None

    def __post_init__(self) -> None:
        """Refuse settings no sweep could run with, naming the field and the fix, before anything starts."""
        check_integer("WorkPoolExecutor.runners", self.runners, 0, "0: a flow run per trial; N: N trial runners")
        if self.runner_max_trials is not None:
            check_integer("WorkPoolExecutor.runner_max_trials", self.runner_max_trials, 1, "trials per runner, or None")
        for name in ("poll_interval", "heartbeat_interval", "heartbeat_timeout", "runner_idle_timeout"):
            value = getattr(self, name)
            if name == "poll_interval" and value is None:
                continue
            if not is_number(value) or not value > 0:
                raise PrefectHPOError(f"WorkPoolExecutor.{name} must be a number of seconds > 0, got {value!r}")
        if self.runner_max_seconds is not None and not (
            is_number(self.runner_max_seconds) and self.runner_max_seconds > 0
        ):
            raise PrefectHPOError(
                f"WorkPoolExecutor.runner_max_seconds must be a number of seconds > 0 or None, got "
                f"{self.runner_max_seconds!r}"
            )
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise PrefectHPOError(
                f"WorkPoolExecutor.heartbeat_timeout ({self.heartbeat_timeout:g}s) must be longer than "
                f"heartbeat_interval ({self.heartbeat_interval:g}s), or every running trial looks dead; "
                "a few intervals is right (the default: 15s for 2s)"
            )

    @property
    def watch_interval(self) -> float:
        """Seconds between the sweep's looks at its trials: `poll_interval`, else 0.5 s with a flow run per
        trial and 0.1 s with runners (a runner starts the next trial as soon as the sweep has heard of the
        last one's end, so the look is most of the gap between two short trials; it is one store query)."""
        if self.poll_interval is not None:
            return self.poll_interval
        return 0.1 if self.runners else 0.5

    def queue_for(self, config: Config, asked: Mapping[str, float] | None = None) -> str:
        """The queue a trial with this configuration runs on: by these settings' `resources`, else by what the
        trial asked for (`sweep(resources=...)`: `asked`)."""
        if self.resources is not None:
            needs = self.resources(config) if callable(self.resources) else self.resources
        else:
            needs = asked or {}
        for resource, name in self.queues.items():
            if needs.get(resource, 0) > 0:
                return name
        return self.default_queue


@dataclass(frozen=True)
class ClusterExecutor:
    """Where trials run: the Prefect task runner of an existing Dask or Ray cluster (settings;
    `ClusterTrials` runs them).

    Build one with `ClusterExecutor.dask(address=...)` / `ClusterExecutor.ray(address=...)`,
    or pass any Prefect task runner. The training function and the store must be
    reachable from the cluster's workers (cloudpickle sends the function; use a
    store every worker reaches, PostgreSQL across machines).
    """

    task_runner: TaskRunner[Any]
    name: str = "cluster"
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def on_this_machine(self) -> bool:
        """A cluster that `dask()` / `ray()` starts here for the sweep (no address; for Ray, no RAY_ADDRESS):
        its workers can reach this machine's temporary Prefect server."""
        if self.name not in ("dask", "ray") or self.options.get("address"):
            return False
        return not (self.name == "ray" and os.environ.get("RAY_ADDRESS"))

    def explain_start_failure(self, error: BaseException) -> PrefectHPOError | None:
        """The clear word for `error` when it is this cluster failing to start, else None.

        Ray starts a local node with a fixed 30 s wait (ray._private.node, not a setting) and fails on a busy
        machine; a node started once beforehand is not subject to it.
        """
        if self.name == "ray" and "timed out during startup" in str(error):
            return PrefectHPOError(
                "executor: the local Ray node did not start within Ray's fixed 30 s (is the machine busy?); "
                "start Ray once with `ray start --head` and pass ClusterExecutor.ray(address='auto')"
            )
        return None

    @classmethod
    def dask(cls, address: str | None = None, **cluster_kwargs: Any) -> ClusterExecutor:
        """Trials on the Dask cluster at `address`, or on a temporary local cluster built from `cluster_kwargs`
        (e.g. `n_workers=2, threads_per_worker=1`) when no address is given. Needs `prefect-hpo[dask]`."""
        try:
            from prefect_dask.task_runners import DaskTaskRunner  # an optional extra, imported when asked for
        except ImportError:
            raise PrefectHPOError(
                "executor: the Dask executor needs prefect-dask; install it with `pip install 'prefect-hpo[dask]'`"
            ) from None
        runner = DaskTaskRunner(address=address) if address else DaskTaskRunner(cluster_kwargs=cluster_kwargs)
        return cls(runner, "dask", {"address": address, **cluster_kwargs})

    @classmethod
    def ray(cls, address: str | None = None, **init_kwargs: Any) -> ClusterExecutor:
        """Trials on the Ray cluster at `address` (default: a local Ray started for the sweep).
        Needs `prefect-hpo[ray]`."""
        try:
            from prefect_ray.task_runners import RayTaskRunner  # an optional extra, imported when asked for
        except ImportError:
            raise PrefectHPOError(
                "executor: the Ray executor needs prefect-ray; install it with `pip install 'prefect-hpo[ray]'`"
            ) from None
        return cls(RayTaskRunner(address=address, init_kwargs=init_kwargs or None), "ray", {"address": address})
