"""A trial runner: one long-lived flow run of the trial deployment that takes a sweep's trials one after another.

With `WorkPoolExecutor(runners=N)` the sweep's parent offers each attempt in the store on its queue
(`store.dispatch`) instead of launching a flow run for it, and launches up to N runner flow runs on the same
deployment and queues. A runner imports the training function once, keeps a worker process forked from
its own warm imports (as the local executor does; a fresh process per trial where the trial holds GPUs),
and loops: claim an offer that fits this host's GPUs, run the trial as a Prefect task run of its own (named
`trial-<number>`, with its logs and state; its id recorded with the trial), record its end, claim the next.

A runner stops when it has been idle for `idle_timeout` seconds, when the sweep is no longer running (it
ended, was interrupted or cancelled), or at its own limits (`max_trials`, `max_seconds`); the parent
launches another where trials wait and fewer runners are alive. A runner that dies mid-trial leaves the
trial RUNNING without heartbeats: the parent records it FAIL_RECOVERABLE once `heartbeat_timeout` has
passed, and the retry is a new attempt, offered again, that another runner claims (the dead attempt's
late writes are refused: its attempt is over).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace

from prefect.context import FlowRunContext

from prefect_hpo.errors import StoreError
from prefect_hpo.executors.jobs import RunnerJob, trial_task
from prefect_hpo.executors.runner_limits import RunnerLimits
from prefect_hpo.executors.runners import ProcessRunner
from prefect_hpo.flows.trial_parts import Heartbeat, trial_spec_from
from prefect_hpo.host_leases import DoesNotFitHost, claim_devices, holding
from prefect_hpo.importing import load_function
from prefect_hpo.records import Outcome, TrialState
from prefect_hpo.resources import Inventory, build_inventory, parse_request
from prefect_hpo.store.dispatch import Offer
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.training import worker_id
from prefect_hpo.trial import TrainFn

#: How often an idle runner looks for an offer (one small read); how often it reads the sweep's status.
IDLE_POLL_S = 0.05
STATUS_POLL_S = 1.0


class _Processes:
    """The runner's worker processes, started at its first trial: one kept between trials (warm imports), or
    a fresh one per trial for trials that hold GPUs (CUDA reads its devices once per process)."""

    def __init__(self, train: TrainFn, storage_url: str) -> None:
        self._train, self._url = train, storage_url
        self._kept: dict[bool, ProcessRunner] = {}

    def for_trial(self, fresh: bool) -> ProcessRunner:
        if fresh not in self._kept:
            self._kept[fresh] = ProcessRunner(self._train, self._url, 1, fresh=fresh)
        return self._kept[fresh]

    def warm(self, fresh: bool) -> None:
        """Start the fork server and a worker now, in the background: its imports (the training module's)
        overlap the runner's own start and its first claim rather than delaying its first trial."""
        self.for_trial(fresh).start_workers()

    def close(self) -> None:
        for runner in self._kept.values():
            runner.close()


def runner_name() -> str:
    """Who claims: this host and process, and the runner's flow run (the trial's `worker` column)."""
    ctx = FlowRunContext.get()
    run = f"/{ctx.flow_run.id}" if ctx is not None and ctx.flow_run is not None else ""
    return f"{worker_id()}{run}"


def run_trials(store: SqlTrialStore, sweep_id: int, train: str, limits: RunnerLimits) -> str:
    """Take and run the sweep's trials offered on `limits.queue` until a reason to stop; returns that reason."""
    name = runner_name()
    inventory = build_inventory("auto", None)
    gpus_here = float(len(inventory.devices))
    try:
        function = load_function(train)  # imported once, here: every trial starts warm
    except Exception as exc:  # noqa: BLE001 - each trial it takes fails with why, as a flow run per trial would
        return _fail_offers(store, sweep_id, limits, name, gpus_here, f"{type(exc).__name__}: {exc}")
    processes = _Processes(function, store.url)
    processes.warm(fresh=gpus_here > 0)  # a GPU host's trials each get a fresh process
    started = idle_since = last_status = time.monotonic()
    ran = 0
    try:
        while True:
            if limits.max_trials is not None and ran >= limits.max_trials:
                return f"ran {ran} trials (max_trials={limits.max_trials})"
            now = time.monotonic()
            if limits.max_seconds is not None and now - started >= limits.max_seconds:
                return f"ran {ran} trials in {now - started:.0f} s (max_seconds={limits.max_seconds:g})"
            offer = None
            if store.waiting(sweep_id, limits.queue, gpus_here):
                offer = store.claim(sweep_id, limits.queue, name, gpus_here)
            if offer is not None:
                _run_one(store, sweep_id, offer, processes, inventory, limits)
                ran += 1
                idle_since = time.monotonic()
                continue
            if now - idle_since >= limits.idle_timeout:
                return f"ran {ran} trials; idle for {limits.idle_timeout:g} s"
            if now - last_status >= STATUS_POLL_S:
                last_status = now
                status = store.sweep(sweep_id)["status"]
                if status != "running":
                    return f"ran {ran} trials; the sweep is {status}"
            time.sleep(IDLE_POLL_S)
    finally:
        processes.close()


def _fail_offers(
    store: SqlTrialStore, sweep_id: int, limits: RunnerLimits, name: str, gpus_here: float, error: str
) -> str:
    """A runner whose training function cannot be imported here: every trial it claims fails with the error
    (the sweep stops on its failures, with the reason in each trial) until it is idle or the sweep ends."""
    failed = 0
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < min(limits.idle_timeout, 10.0):
        offer = store.claim(sweep_id, limits.queue, name, gpus_here)
        if offer is None:
            if store.sweep(sweep_id)["status"] != "running":
                break
            time.sleep(IDLE_POLL_S * 10)
            continue
        reason = f"the training function could not be imported on this worker: {error}"
        with contextlib.suppress(StoreError):  # the sweep ended it meanwhile
            store.end_attempt(offer.trial_id, offer.attempt, Outcome(TrialState.FAIL, error=reason, worker=name))
        store.release(offer.trial_id, offer.attempt)
        failed += 1
        idle_since = time.monotonic()
    return f"failed {failed} trials: the training function could not be imported ({error})"


def _run_one(
    store: SqlTrialStore, sweep_id: int, offer: Offer, processes: _Processes, inventory: Inventory, limits: RunnerLimits
) -> None:
    """Run one claimed attempt as a Prefect task run of this flow run, and record its end."""
    record = store.trial(sweep_id, offer.number)
    if record.state != TrialState.RUNNING or record.attempt != offer.attempt:
        store.release(offer.trial_id, offer.attempt)  # the sweep ended or retried it since it was offered
        return
    spec = trial_spec_from(offer.spec, record, sweep_id)
    try:
        # this host's GPUs, held across the runners on it (lock files), while the trial's heartbeat goes on
        lease = claim_devices(
            parse_request(offer.spec.get("resources")), inventory, waiting=lambda: store.beat(record.id)
        )
    except DoesNotFitHost as exc:  # not retried: it would not fit on this host the next time either
        outcome = Outcome(TrialState.FAIL, error=str(exc), reason=str(exc), worker=worker_id())
        store.end_attempt(record.id, record.attempt, outcome)
        store.release(offer.trial_id, offer.attempt)
        return
    with holding(lease) as placement:
        held = replace(
            spec, resources=placement.requested, devices=placement.devices, cpu_threads=placement.cpu_threads
        )
        job = RunnerJob(held, processes.for_trial(fresh=bool(placement.devices)), store, limits.trial_time_limit)
        # the heartbeat also carries the sweep's stop requests to the trial's process (a scheduler's stop,
        # the sweep's end), as the local executor's cancel does
        with Heartbeat(store, record.id, limits.heartbeat_interval, on_stop=job.cancel):
            trial_task(record.number, record.config, job, return_state=True)
    store.release(offer.trial_id, offer.attempt)


__all__ = ["run_trials"]
