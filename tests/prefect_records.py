"""Everything a Prefect server keeps about runs, read back through Prefect's client as one text to search."""

from __future__ import annotations

import json
import time
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import LogFilter
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

PAGE = 200
EVENTS_PAGE = 50  # the most the events API returns at once


def _dump(items: list[Any]) -> list[str]:
    return [json.dumps(item.model_dump(mode="json"), default=str) for item in items]


def _paged(read: Any) -> list[Any]:
    out: list[Any] = []
    while True:
        page = read(offset=len(out))
        out.extend(page)
        if len(page) < PAGE:
            return out


def server_records(client: SyncPrefectClient) -> dict[str, list[str]]:
    """Every flow run (parameters, states, names), task run, log, artifact and event on the server, as JSON."""
    events: list[Any] = []
    page = client.read_events(EventFilter(), limit=EVENTS_PAGE)
    events.extend(page.events)
    while page.next_page is not None:
        page = client.read_events_page(page.next_page)
        events.extend(page.events)
    return {
        "flow runs": _dump(_paged(lambda offset: client.read_flow_runs(limit=PAGE, offset=offset))),
        "task runs": _dump(_paged(lambda offset: client.read_task_runs(limit=PAGE, offset=offset))),
        "logs": _dump(_paged(lambda offset: client.read_logs(LogFilter(), limit=PAGE, offset=offset))),
        "artifacts": _dump(_paged(lambda offset: client.read_artifacts(limit=PAGE, offset=offset))),
        "events": _dump(events),
    }


def wait_for_events(
    client: SyncPrefectClient, name: str, count: int, resource_id: str | None = None, within: float = 120
) -> None:
    """Wait until the server has persisted `count` events named `name` (about `resource_id`, if given,
    e.g. "prefect.flow-run.<id>"): its event persister writes them in batches."""
    resource = EventResourceFilter(id=[resource_id]) if resource_id is not None else None
    query = EventFilter(event=EventNameFilter(name=[name]), resource=resource)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if client.read_events(query, limit=EVENTS_PAGE).total >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} {name!r} events reached the server within {within}s")


def leaks(records: dict[str, list[str]], secret: str) -> dict[str, list[str]]:
    """The records, by kind, that hold `secret`."""
    return {kind: [r for r in rows if secret in r] for kind, rows in records.items() if any(secret in r for r in rows)}
