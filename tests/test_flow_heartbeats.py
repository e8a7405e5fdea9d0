"""The sweep flow run's heartbeats: sent by the sweep, at Prefect's frequency, and once each, not twice."""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from prefect_hpo import Budget, Float, SqlTrialStore, sweep
from prefect_hpo.flow_heartbeats import FlowRunHeartbeats, sent_by_the_sweep
from tests.prefect_records import wait_for_events
from tests.servers import flush_to_server


def test_a_sweep_sends_its_flow_runs_heartbeat_itself_and_prefect_does_not(ui_server: str, sqlite_url: str) -> None:
    # Prefect keeps one events worker per process for any running server, made with the API URL of its first
    # event: in this test process that may be another test's server, stopped since. Drained, it is made anew.
    flush_to_server()
    with temporary_settings({PREFECT_API_URL: ui_server, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}):
        sweep(
            lambda c: c["x"],
            {"x": Float(0.0, 1.0)},
            "loss",
            "random",
            Budget(max_trials=2, max_concurrent=2),
            storage=sqlite_url,
            name="beats",
            workers="threads",
            artifact_interval=None,
        )
        store = SqlTrialStore(sqlite_url)
        flow_run = f"prefect.flow-run.{store.sweep(store.sweep_id('beats'))['flow_run_id']}"
        store.close()
        with get_client(sync_client=True) as client:
            # the flow run's last event (its Completed state) is sent after any heartbeat of its engine would be
            wait_for_events(client, "prefect.flow-run.Completed", 1, resource_id=flow_run)
            wait_for_events(client, "prefect.flow-run.heartbeat", 1, resource_id=flow_run)
            beats = client.read_events(
                EventFilter(
                    event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                    resource=EventResourceFilter(id=[flow_run]),
                ),
                limit=10,
            )
    # one at the start (a sweep of seconds, a frequency of 30 s): Prefect's engine sent none beside it
    assert beats.total == 1
    [beat] = beats.events
    assert beat.resource.get("prefect.resource.name") == "beats"
    assert {r.role for r in beat.related} >= {"flow"}


def test_outside_a_sweep_call_nothing_is_taken_over() -> None:
    """A sweep flow run started another way (a deployment) keeps Prefect's own heartbeats."""
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}):
        with FlowRunHeartbeats() as beats:
            assert beats._thread is None  # no flow run, nothing taken over: nothing sent
        with sent_by_the_sweep():
            from prefect.settings import get_current_settings

            assert get_current_settings().flows.heartbeat_frequency is None  # Prefect's engine sends none
        assert get_current_settings().flows.heartbeat_frequency == 30
