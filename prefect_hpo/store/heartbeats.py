"""The store's heartbeats of running trials: a trial on a remote worker says it is alive every few seconds,
and the sweep's parent reads when it last did (`executors.workpool`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update

from prefect_hpo.records import TrialState
from prefect_hpo.store import schema
from prefect_hpo.store.database import StorePart
from prefect_hpo.store.outages import guard_public_methods


@dataclass(frozen=True)
class Pulse:
    """A trial as its watcher sees it: its state, and when it last gave a sign of life (unix seconds)."""

    state: TrialState
    heartbeat_at: float | None


@guard_public_methods
class Heartbeats(StorePart):
    """When each running trial last gave a sign of life (the `heartbeat_at` column of its row)."""

    def beat(self, trial_id: int) -> None:
        """A running trial's sign of life (remote workers send one every few seconds)."""
        with self.database.write() as conn:
            conn.execute(update(schema.trials).where(schema.trials.c.id == trial_id).values(heartbeat_at=time.time()))

    def heartbeat(self, trial_id: int) -> float | None:
        """When the trial last gave a sign of life (unix seconds), if ever."""
        with self.database.read() as conn:
            beat = conn.execute(select(schema.trials.c.heartbeat_at).where(schema.trials.c.id == trial_id)).scalar()
        return None if beat is None else float(beat)

    def pulses(self, trial_ids: Sequence[int]) -> dict[int, Pulse]:
        """The state and last heartbeat of each of these trials, in one query (a sweep's watcher reads every
        trial it has in flight at once, however many); a trial that no longer exists is left out."""
        if not trial_ids:
            return {}
        t = schema.trials.c
        with self.database.read() as conn:
            rows = conn.execute(select(t.id, t.state, t.heartbeat_at).where(t.id.in_(list(trial_ids)))).all()
        return {int(id_): Pulse(TrialState(state), None if beat is None else float(beat)) for id_, state, beat in rows}
