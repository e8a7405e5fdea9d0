"""The store's leases on sweeps: which parent runs a sweep now, and its heartbeat (`prefect_hpo.lease`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from sqlalchemy import select, update

from prefect_hpo.errors import SweepBusyError
from prefect_hpo.store import schema
from prefect_hpo.store.database import StorePart
from prefect_hpo.store.outages import guard_public_methods


@guard_public_methods
class Leases(StorePart):
    """The owner of each sweep (one parent at a time) and when that owner last gave a sign of life."""

    def claim_sweep(
        self, sweep_id: int, owner: str, stale_after: float, alive: Callable[[str], bool]
    ) -> tuple[str | None, str | None]:
        """Make `owner` the parent that runs the sweep; returns the (owner, flow run id) it took over.

        Refused with SweepBusyError while another owner holds it: one whose heartbeat is younger than
        `stale_after` seconds and that `alive(owner)` does not know to be dead.
        """
        s = schema.sweeps
        with self.database.write() as conn:
            query = select(s.c.name, s.c.owner, s.c.owner_beat, s.c.flow_run_id).where(s.c.id == sweep_id)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()  # SQLite's BEGIN IMMEDIATE already serialises claims
            row = conn.execute(query).one()
            now = time.time()
            if row.owner is not None and row.owner != owner:
                age = math.inf if row.owner_beat is None else now - float(row.owner_beat)
                if age < stale_after and alive(row.owner):
                    raise SweepBusyError(
                        f"sweep {row.name!r} is being run by {row.owner} (flow run {row.flow_run_id}), "
                        f"which was alive {age:.0f}s ago; wait for it to end or stop it, or give this sweep "
                        "another name"
                    )
            conn.execute(update(s).where(s.c.id == sweep_id).values(owner=owner, owner_beat=now))
        return (row.owner if row.owner != owner else None), row.flow_run_id

    def renew_claim(self, sweep_id: int, owner: str) -> bool:
        """The owner's heartbeat; False if another parent has taken the sweep over meanwhile."""
        s = schema.sweeps
        with self.database.write() as conn:
            done = conn.execute(update(s).where(s.c.id == sweep_id, s.c.owner == owner).values(owner_beat=time.time()))
        return bool(done.rowcount)

    def release_sweep(self, sweep_id: int, owner: str) -> None:
        s = schema.sweeps
        with self.database.write() as conn:
            conn.execute(update(s).where(s.c.id == sweep_id, s.c.owner == owner).values(owner=None, owner_beat=None))
