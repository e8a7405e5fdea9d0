"""What the trial flow and the runner flow share: a trial's settings rebuilt on the worker, and its heartbeat."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from prefect_hpo.checkpoint_layout import legacy_folder
from prefect_hpo.objective import build_objectives
from prefect_hpo.records import TrialRecord
from prefect_hpo.schedulers import scheduler_from_dict
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.trial import TrialSpec


class Heartbeat:
    """Writes the trial's sign of life to the store every `interval` seconds, from a daemon thread.

    `on_stop`, where given, is called once with the sweep's stop request as soon as one is stored (checked
    every `stop_poll` seconds): a runner stops its trial's process with it, as the local executor does."""

    def __init__(
        self,
        store: SqlTrialStore,
        trial_id: int,
        interval: float,
        on_stop: Callable[[str], None] | None = None,
        stop_poll: float = 0.5,
    ) -> None:
        self._store, self._trial_id, self._interval = store, trial_id, interval
        self._on_stop, self._stop_poll = on_stop, stop_poll
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="hpo-heartbeat")

    def __enter__(self) -> Heartbeat:
        self._store.beat(self._trial_id)
        self._thread.start()
        return self

    def _run(self) -> None:
        tick = self._interval if self._on_stop is None else min(self._interval, self._stop_poll)
        since_beat = 0.0
        asked = False
        while not self._stopped.wait(tick):
            since_beat += tick
            if since_beat >= self._interval - 1e-9:
                self._store.beat(self._trial_id)
                since_beat = 0.0
            if self._on_stop is not None and not asked:
                reason = self._store.stop_request(self._trial_id)
                if reason is not None:
                    asked = True
                    self._on_stop(reason)

    def __exit__(self, *_: object) -> None:
        self._stopped.set()
        self._thread.join(timeout=self._interval + 5)


def checkpoint_path(spec: dict[str, Any], number: int) -> str | None:
    """The trial's checkpoint folder as the parent resolved it; a flow run launched by a release from before
    per-sweep folders names the root instead, and its trials use the old folder (`<root>/<cleaned name>`)."""
    if "checkpoint_path" in spec or not spec.get("checkpoint_root"):
        return spec.get("checkpoint_path")
    return f"{str(spec['checkpoint_root']).rstrip('/')}/{legacy_folder(spec['sweep_name'])}/trial-{number}"


def trial_spec_from(spec: dict[str, Any], record: TrialRecord, sweep_id: int) -> TrialSpec:
    """The trial's settings on the worker: the parent's `spec` (plain data, as the flow run's parameters or a
    runner's offer carry it) and the trial as stored."""
    return TrialSpec(
        trial_id=record.id,
        number=record.number,
        sweep_name=spec["sweep_name"],
        config=record.config,
        objectives=build_objectives(spec["objectives"]),
        max_steps=spec.get("max_steps"),
        pass_trial=spec.get("pass_trial", True),
        sweep_id=sweep_id,
        bracket=record.bracket,
        scheduler=scheduler_from_dict(spec.get("scheduler")),
        min_steps=spec.get("min_steps"),
        attempt=record.attempt,
        # the parent's word (a PBT member starts from its parent's step); else a resumed attempt's last step
        resume_step=spec.get("resume_step", record.last_step if record.attempt > 1 else None),
        checkpoint_path=checkpoint_path(spec, record.number),
        max_total_steps=spec.get("max_total_steps"),
    )
