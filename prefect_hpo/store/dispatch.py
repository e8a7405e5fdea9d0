"""The store's offers of trials to long-lived runners (`WorkPoolExecutor(runners=N)`).

In runner mode the sweep's parent does not launch a flow run per trial: it offers each attempt on the queue
its resources ask for (a row of `hpo_dispatch`), and runner flow runs on the pool's workers claim offers one
at a time. A claim is a compare-and-set inside one write transaction (SQLite's BEGIN IMMEDIATE serialises
writers; PostgreSQL skips rows another claim has locked), so an offer goes to one runner only, and only while
its trial is still RUNNING at that attempt: an attempt the sweep has ended or retried is never run. Claiming
also gives the trial its first heartbeat, from which the parent times its silence.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from prefect_hpo.records import TrialState
from prefect_hpo.store import schema
from prefect_hpo.store.database import StorePart
from prefect_hpo.store.outages import guard_public_methods


@dataclass(frozen=True)
class Offer:
    """One attempt a runner has claimed: which trial, and the trial flow's settings for it (`spec`)."""

    trial_id: int
    number: int
    attempt: int
    spec: dict[str, Any]


@guard_public_methods
class Dispatch(StorePart):
    """Offers of trials to runners, and their claims."""

    def offer(
        self, sweep_id: int, trial_id: int, attempt: int, queue: str, gpus: float, spec: Mapping[str, Any]
    ) -> None:
        """Offer attempt `attempt` of the trial on `queue` (to runners with at least `gpus` GPUs); an earlier
        attempt's offer is replaced, and offering the same attempt again keeps the first (a resumed parent)."""
        d = schema.dispatch
        with self.database.write() as conn:
            held = conn.execute(select(d.c.attempt).where(d.c.trial_id == trial_id)).scalar()
            if held == attempt:
                return
            if held is not None:
                conn.execute(delete(d).where(d.c.trial_id == trial_id))
            conn.execute(
                insert(d).values(
                    trial_id=trial_id,
                    sweep_id=sweep_id,
                    attempt=attempt,
                    queue=queue,
                    gpus=float(gpus),
                    spec=dict(spec),
                    offered_at=time.time(),
                )
            )

    def waiting(self, sweep_id: int, queue: str, gpus_here: float) -> bool:
        """Whether an offer on `queue` that fits `gpus_here` GPUs waits for a runner (a read: runners ask it
        while idle, and claim only when it says yes)."""
        d = schema.dispatch
        with self.database.read() as conn:
            found = conn.execute(
                select(d.c.trial_id)
                .where(d.c.sweep_id == sweep_id, d.c.queue == queue, d.c.runner.is_(None), d.c.gpus <= gpus_here)
                .limit(1)
            ).first()
        return found is not None

    def claim(self, sweep_id: int, queue: str, runner: str, gpus_here: float) -> Offer | None:
        """Claim the oldest offer on `queue` that fits `gpus_here` GPUs and whose trial still runs at the offered
        attempt, for `runner`; None when there is none. The trial gets its first heartbeat and `runner` as
        its worker."""
        d, t = schema.dispatch, schema.trials
        with self.database.write() as conn:
            query = (
                select(d.c.trial_id, d.c.attempt, d.c.spec, t.c.number)
                .join(t, t.c.id == d.c.trial_id)
                .where(
                    d.c.sweep_id == sweep_id,
                    d.c.queue == queue,
                    d.c.runner.is_(None),
                    d.c.gpus <= gpus_here,
                    t.c.state == TrialState.RUNNING.value,
                    t.c.attempt == d.c.attempt,
                )
                .order_by(d.c.offered_at, d.c.trial_id)
                .limit(1)
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(of=d, skip_locked=True)  # SQLite's BEGIN IMMEDIATE serialises claims
            row = conn.execute(query).first()
            if row is None:
                return None
            now = time.time()
            taken = conn.execute(
                update(d)
                .where(d.c.trial_id == row.trial_id, d.c.runner.is_(None))
                .values(runner=runner, claimed_at=now)
            )
            if not taken.rowcount:
                return None
            conn.execute(update(t).where(t.c.id == row.trial_id).values(heartbeat_at=now, worker=runner[:255]))
        return Offer(int(row.trial_id), int(row.number), int(row.attempt), dict(row.spec))

    def claimant(self, trial_id: int, attempt: int) -> str | None:
        """The runner that claimed the attempt, if one did (as it named itself: host:pid/flow run id)."""
        d = schema.dispatch
        with self.database.read() as conn:
            found = conn.execute(select(d.c.runner).where(d.c.trial_id == trial_id, d.c.attempt == attempt)).scalar()
        return None if found is None else str(found)

    def withdraw(self, trial_id: int, attempt: int) -> bool:
        """Take back the attempt's offer if no runner has claimed it; False when one has (or there is none)."""
        d = schema.dispatch
        with self.database.write() as conn:
            gone = conn.execute(delete(d).where(d.c.trial_id == trial_id, d.c.attempt == attempt, d.c.runner.is_(None)))
        return bool(gone.rowcount)

    def release(self, trial_id: int, attempt: int) -> None:
        """Remove the attempt's offer once its runner has recorded the trial's end."""
        d = schema.dispatch
        with self.database.write() as conn:
            conn.execute(delete(d).where(d.c.trial_id == trial_id, d.c.attempt == attempt))

    def withdraw_all(self, sweep_id: int) -> int:
        """Take back every offer of the sweep no runner has claimed (the sweep ends); how many there were."""
        d = schema.dispatch
        with self.database.write() as conn:
            gone = conn.execute(delete(d).where(d.c.sweep_id == sweep_id, d.c.runner.is_(None)))
        return int(gone.rowcount or 0)

    def offers(self, sweep_id: int) -> dict[str, tuple[int, int]]:
        """Per queue: offers waiting for a runner, and offers claimed (for tests and the benchmarks)."""
        d = schema.dispatch
        with self.database.read() as conn:
            rows = conn.execute(
                select(d.c.queue, d.c.runner.is_(None), func.count())
                .where(d.c.sweep_id == sweep_id)
                .group_by(d.c.queue, d.c.runner.is_(None))
            ).all()
        counts: dict[str, list[int]] = {}
        for queue, unclaimed, count in rows:
            counts.setdefault(queue, [0, 0])[0 if unclaimed else 1] += int(count)
        return {queue: (waiting, claimed) for queue, (waiting, claimed) in counts.items()}
