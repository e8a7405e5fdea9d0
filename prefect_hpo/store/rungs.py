"""The store's rungs: the score each trial had when it reached a rung of successive halving (ASHA, Hyperband).

A rung's row ids are the order in which trials reached it, which the promotion rules compare by.
"""

from __future__ import annotations

import math
import time

from sqlalchemy import func, select

from prefect_hpo.records import TrialState
from prefect_hpo.store import schema
from prefect_hpo.store.database import StorePart
from prefect_hpo.store.outages import guard_public_methods
from prefect_hpo.store.rows import inserted_id, nan_for_none


@guard_public_methods
class Rungs(StorePart):
    """One row per trial per rung it reached: bracket, level (step), score."""

    def record_rung(self, sweep_id: int, trial_id: int, bracket: int, level: int, score: float) -> list[float]:
        """Record a trial's score at a rung; the rung's scores so far in arrival order (NaN for NaN)."""
        r = schema.rungs
        with self.database.write() as conn:
            mine = conn.execute(select(r.c.id).where(r.c.trial_id == trial_id, r.c.level == level)).scalar()
            if mine is None:
                mine = inserted_id(
                    conn.execute(
                        r.insert().values(
                            sweep_id=sweep_id,
                            trial_id=trial_id,
                            bracket=bracket,
                            level=level,
                            score=score if math.isfinite(score) else None,
                            created_at=time.time(),
                        )
                    )
                )
            rows = conn.execute(
                select(r.c.score)
                .where(r.c.sweep_id == sweep_id, r.c.bracket == bracket, r.c.level == level, r.c.id <= mine)
                .order_by(r.c.id)
            ).all()
        return [nan_for_none(row[0]) for row in rows]

    def rungs(self, sweep_id: int, after_id: int = 0) -> list[tuple[int, int, int, int, float]]:
        """Rung records (id, trial number, bracket, level, score) with id > `after_id`, in arrival order."""
        r, t = schema.rungs, schema.trials
        with self.database.read() as conn:
            rows = conn.execute(
                select(r.c.id, t.c.number, r.c.bracket, r.c.level, r.c.score)
                .join(t, t.c.id == r.c.trial_id)
                .where(r.c.sweep_id == sweep_id, r.c.id > after_id)
                .order_by(r.c.id)
            ).all()
        return [(int(a), int(b), int(c), int(d), nan_for_none(e)) for a, b, c, d, e in rows]

    def rung_scores(self, sweep_id: int, bracket: int, level: int) -> list[float]:
        """Every score recorded at one rung, in arrival order."""
        r = schema.rungs
        with self.database.read() as conn:
            rows = conn.execute(
                select(r.c.score)
                .where(r.c.sweep_id == sweep_id, r.c.bracket == bracket, r.c.level == level)
                .order_by(r.c.id)
            ).all()
        return [nan_for_none(row[0]) for row in rows]

    def paused_at_rungs(self, sweep_id: int) -> list[tuple[int, int, int, float]]:
        """(trial number, bracket, highest rung level reached, score there) of every PAUSED trial."""
        r, t = schema.rungs, schema.trials
        top = (
            select(r.c.trial_id, func.max(r.c.level).label("level"))
            .where(r.c.sweep_id == sweep_id)
            .group_by(r.c.trial_id)
            .subquery()
        )
        with self.database.read() as conn:
            rows = conn.execute(
                select(t.c.number, r.c.bracket, r.c.level, r.c.score)
                .join(top, top.c.trial_id == t.c.id)
                .join(r, (r.c.trial_id == t.c.id) & (r.c.level == top.c.level))
                .where(t.c.sweep_id == sweep_id, t.c.state == TrialState.PAUSED.value)
                .order_by(t.c.number)
            ).all()
        return [(int(a), int(b), int(c), nan_for_none(d)) for a, b, c, d in rows]
