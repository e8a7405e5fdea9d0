"""The sweep flow run's heartbeats, sent by the sweep rather than by Prefect's flow engine.

Prefect's engine sends a `prefect.flow-run.heartbeat` event every `PREFECT_FLOWS_HEARTBEAT_FREQUENCY`
seconds (180 by default; a server's automation can mark a flow run whose heartbeats stop as crashed). Its
thread sleeps in whole-second steps, and a synchronous flow run's end joins it: every `sweep()` waited up to
1 s after its last trial (0.5 s on average, for nothing; 1.5 s under a loaded machine). `sweep()` turns
Prefect's heartbeats off for its own flow run (`sent_by_the_sweep`) and the flow sends the same event at the
same frequency from a thread that stops at once (`FlowRunHeartbeats`), so an automation watching heartbeats
sees no difference. A sweep flow run started another way (a deployment, `prefect.engine`) keeps Prefect's own.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator
from typing import Any

from prefect import __version__ as prefect_version
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.events.related import tags_as_related_resources
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

_log = logging.getLogger("prefect_hpo.flow_heartbeats")

#: The heartbeat frequency `sent_by_the_sweep` took over from Prefect, for the flow run it wraps. A context
#: variable rather than a flow parameter: it is a setting of the call, not of the sweep, and has no place in
#: the flow run's parameters (or in a deployment's form).
_TAKEN_OVER: contextvars.ContextVar[int | None] = contextvars.ContextVar("prefect_hpo_flow_heartbeats", default=None)


@contextlib.contextmanager
def sent_by_the_sweep() -> Iterator[None]:
    """Around a sweep flow call: Prefect's engine sends no heartbeats for it; the flow sends them itself."""
    frequency = get_current_settings().flows.heartbeat_frequency
    if frequency is None:  # off (the temporary server turns them off: no one could see them)
        yield
        return
    token = _TAKEN_OVER.set(frequency)
    try:
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield
    finally:
        _TAKEN_OVER.reset(token)


class FlowRunHeartbeats:
    """Inside the sweep flow: sends its flow run's heartbeat event now and every `frequency` seconds until the
    `with` block ends, which it does at once. Does nothing where Prefect sends them (`sent_by_the_sweep`)."""

    def __init__(self) -> None:
        self._frequency = _TAKEN_OVER.get()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._event: dict[str, Any] = {}
        context = FlowRunContext.get()
        if self._frequency is None or context is None or context.flow_run is None:
            return
        run = context.flow_run
        related: list[dict[str, str]] = []
        if run.flow_id:
            flow_name = context.flow.name if context.flow else ""
            related.append(
                {
                    "prefect.resource.id": f"prefect.flow.{run.flow_id}",
                    "prefect.resource.role": "flow",
                    "prefect.resource.name": flow_name,
                }
            )
        if run.deployment_id:
            related.append(
                {
                    "prefect.resource.id": f"prefect.deployment.{run.deployment_id}",
                    "prefect.resource.role": "deployment",
                }
            )
        tags = [tag.model_dump() for tag in tags_as_related_resources(set(run.tags or []))]
        self._event = {
            "event": "prefect.flow-run.heartbeat",  # what Prefect's engine sends, with its resource and related
            "resource": {
                "prefect.resource.id": f"prefect.flow-run.{run.id}",
                "prefect.resource.name": run.name or "",
                "prefect.version": prefect_version,
            },
            "related": related + tags,
        }

    def __enter__(self) -> FlowRunHeartbeats:
        if self._event:
            # in this context: its settings name the server (a thread starts with the process's defaults)
            context = contextvars.copy_context()
            self._thread = threading.Thread(
                target=context.run, args=(self._beat,), daemon=True, name="hpo-flow-heartbeats"
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _beat(self) -> None:
        assert self._frequency is not None
        while True:
            try:
                emit_event(**self._event)
            except Exception:  # noqa: BLE001 - as Prefect's own: a missed heartbeat must not end the sweep
                _log.debug("the flow run's heartbeat could not be sent", exc_info=True)
            if self._stop.wait(self._frequency):
                return
