"""The sweep's one watcher of its work-pool trials, against a real Prefect server and a real store.

The flow runs here are made through Prefect's client and moved between states by the test, as a worker
would move them; the store's rows are the trials' own (reports, heartbeats, ends). A spy around Prefect's
client records which flow runs each request names: the point of the watcher is that a healthy trial in flight
costs no request at all, and all trials together one store query a tick."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter
from prefect.client.schemas.objects import FlowRun, State
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled, Cancelling, Running, Scheduled
from sqlalchemy import update

from prefect_hpo import SqlTrialStore, TrialState, WorkPoolExecutor
from prefect_hpo.executors.pool_watch import PoolWatch
from prefect_hpo.executors.workpool import WorkPoolJob
from prefect_hpo.objective import Objective
from prefect_hpo.records import Outcome
from prefect_hpo.store import schema
from prefect_hpo.store.heartbeats import Pulse
from prefect_hpo.trial import TrialSpec

pytestmark = pytest.mark.prefect

TIMEOUT = 60.0  # heartbeat_timeout: long against the test (the queued trial is looked at once in it), so that
# only the trials made silent are silent


@flow(name="hpo-watched")
def watched() -> None:
    """Never run: the flow the test's flow runs belong to."""


class ClientSpy:
    """Prefect's client, with each request's flow-run ids written down."""

    def __init__(self, client: SyncPrefectClient) -> None:
        self.client = client
        self.read: list[set[str]] = []
        self.set: list[tuple[str, str]] = []

    def read_flow_runs(
        self, *, flow_run_filter: FlowRunFilter | None = None, limit: int | None = None
    ) -> list[FlowRun]:
        assert flow_run_filter is not None and flow_run_filter.id is not None and flow_run_filter.id.any_
        self.read.append({str(i) for i in flow_run_filter.id.any_})
        return self.client.read_flow_runs(flow_run_filter=flow_run_filter, limit=limit)

    def set_flow_run_state(self, flow_run_id: UUID, state: State, force: bool = False) -> Any:
        self.set.append((str(flow_run_id), state.type.value))
        return self.client.set_flow_run_state(flow_run_id, state, force=force)


class StoreSpy:
    def __init__(self, store: SqlTrialStore) -> None:
        self.store = store
        self.asked: list[set[int]] = []

    def pulses(self, trial_ids: Sequence[int]) -> dict[int, Pulse]:
        self.asked.append(set(trial_ids))
        return self.store.pulses(trial_ids)


@pytest.fixture
def client(ui_server: str) -> Iterator[SyncPrefectClient]:
    with temporary_settings({PREFECT_API_URL: ui_server}), get_client(sync_client=True) as client:
        yield client


def test_one_watcher_reads_only_the_flow_runs_of_silent_queued_or_stopped_trials(
    client: SyncPrefectClient, sqlite_url: str
) -> None:
    store = SqlTrialStore(sqlite_url)
    objectives = (Objective("loss"),)
    sid = store.open_sweep("watched", space={}, objectives=[o.to_dict() for o in objectives], strategy="-", budget={})
    settings = WorkPoolExecutor(poll_interval=0.05, heartbeat_timeout=TIMEOUT)
    stores, spy = StoreSpy(store), ClientSpy(client)
    ready = threading.Event()  # the watcher opens its client, then ticks, once every job is watched

    def opened() -> contextlib.AbstractContextManager[ClientSpy]:
        ready.wait(timeout=30)
        return contextlib.nullcontext(spy)

    watch = PoolWatch(stores, settings.watch_interval, patience=TIMEOUT, client=opened)
    now = time.time()
    kinds = ["healthy", "ends", "silent", "cancelled-by-a-person", "queued", "past-its-limit"]
    jobs: dict[str, WorkPoolJob] = {}
    runs: dict[str, FlowRun] = {}
    for number, kind in enumerate(kinds):
        record = store.create_trial(sid, number, {"kind": kind}, f"h{number}")
        spec = TrialSpec(record.id, number, "watched", record.config, objectives, None, True, sweep_id=sid)
        limit = 5.0 if kind == "past-its-limit" else None
        jobs[kind] = WorkPoolJob(spec, {}, "cpu", store, settings, limit, "uid", watch)
        runs[kind] = client.create_flow_run(watched, name=f"watched-{kind}")
        # as the worker and the trial flow would leave them: running with a heartbeat, or queued without one
        client.set_flow_run_state(runs[kind].id, Scheduled() if kind == "queued" else Running(), force=True)
        beat = {"silent": now - 100, "cancelled-by-a-person": now - 100, "past-its-limit": now - 10}.get(kind, now)
        if kind != "queued":
            with store.database.write() as conn:
                conn.execute(update(schema.trials).where(schema.trials.c.id == record.id).values(heartbeat_at=beat))
    client.set_flow_run_state(runs["cancelled-by-a-person"].id, Cancelling(message="from the UI"), force=True)
    ended: dict[str, Any] = {}

    def follow(kind: str) -> None:
        try:
            ended[kind] = jobs[kind].follow(str(runs[kind].id), now - 100)
        except RuntimeError as exc:
            ended[kind] = exc

    threads = {kind: threading.Thread(target=follow, args=(kind,), daemon=True) for kind in kinds}
    for thread in threads.values():
        thread.start()
    deadline = time.monotonic() + 30
    while watch.watching() < len(kinds) and time.monotonic() < deadline:
        time.sleep(0.01)
    ready.set()
    try:
        store.finish_trial(jobs["ends"].trial_id, Outcome(TrialState.COMPLETE, values=(0.5,)))  # the trial's own end
        for kind in ("ends", "silent", "cancelled-by-a-person"):
            threads[kind].join(timeout=30)
        # past its limit: recorded FAIL and its run cancelled; the slot is free once its worker has ended the run
        deadline = time.monotonic() + 30
        while (str(runs["past-its-limit"].id), "CANCELLING") not in spy.set and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not ended.get("past-its-limit"), "ended before its flow run did"
        client.set_flow_run_state(runs["past-its-limit"].id, Cancelled(), force=True)
        threads["past-its-limit"].join(timeout=30)
    finally:
        watch.close()
    for thread in threads.values():
        thread.join(timeout=10)

    assert ended["ends"].state == TrialState.COMPLETE
    assert ended["silent"].state == TrialState.FAIL_RECOVERABLE and re.match(
        r"no heartbeat for \d+s", ended["silent"].error
    )
    assert ended["cancelled-by-a-person"].state == TrialState.PRUNED
    assert "was cancelled in Prefect; not retried" in ended["cancelled-by-a-person"].reason
    assert ended["past-its-limit"].state == TrialState.FAIL and "TrialTimeout" in ended["past-its-limit"].error
    # still in flight when the watcher closed: they end with its word (their flow runs go on)
    assert isinstance(ended["healthy"], RuntimeError) and isinstance(ended["queued"], RuntimeError)
    crashed = client.read_flow_run(runs["silent"].id).state
    assert crashed is not None and crashed.is_crashed()

    # every tick asked the store once, for every trial in flight then; a healthy trial never cost a request
    assert stores.asked[0] == {job.trial_id for job in jobs.values()}
    assert all({jobs["healthy"].trial_id, jobs["queued"].trial_id} <= asked for asked in stores.asked)
    names = {str(run.id): kind for kind, run in runs.items()}
    looked = {names[i] for request in spy.read for i in request}
    assert "healthy" not in looked and "ends" not in looked
    assert {"silent", "cancelled-by-a-person", "queued", "past-its-limit"} <= looked
    # the queued one is looked at once per heartbeat_timeout, not every tick
    assert sum("queued" in {names[i] for i in request} for request in spy.read) == 1
    assert sorted((names[run_id], state) for run_id, state in spy.set) == [
        ("past-its-limit", "CANCELLING"),
        ("silent", "CRASHED"),
    ]
    store.close()
