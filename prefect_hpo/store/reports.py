"""The store's intermediate reports: one row per `trial.report(step, ...)`, and what schedulers read of them."""

from __future__ import annotations

import time
from collections.abc import Mapping

from sqlalchemy import bindparam, func, select

from prefect_hpo.records import Report
from prefect_hpo.store import schema
from prefect_hpo.store.database import StorePart
from prefect_hpo.store.outages import guard_public_methods
from prefect_hpo.store.rows import UPDATE_TRIAL, clean, finite_or_none, floats

_INSERT_REPORT = schema.reports.insert()
_SELECT_SWEEP_OF_TRIAL = select(schema.trials.c.sweep_id).where(schema.trials.c.id == bindparam("trial_id"))
_SELECT_STOP_REQUEST = select(schema.trials.c.stop_requested).where(schema.trials.c.id == bindparam("trial_id"))


@guard_public_methods
class Reports(StorePart):
    """Each report's step and metrics, and the objective's score there in 'lower is better' form."""

    def add_report(
        self, trial_id: int, step: int, metrics: Mapping[str, float], *, sweep_id: int = 0, score: float | None = None
    ) -> str | None:
        """Store one intermediate report and the trial's last step; return the trial's stop request, if any
        (read in the same transaction: a running trial learns of a stop at its next report)."""
        with self.database.write() as conn:
            if not sweep_id:
                sweep_id = conn.execute(_SELECT_SWEEP_OF_TRIAL, {"trial_id": trial_id}).scalar_one()
            conn.execute(
                _INSERT_REPORT,
                {
                    "trial_id": trial_id,
                    "sweep_id": sweep_id,
                    "step": step,
                    "metrics": clean(dict(metrics)),
                    "score": finite_or_none(score),
                    "created_at": time.time(),
                },
            )
            conn.execute(UPDATE_TRIAL, {"trial_id": trial_id, "last_step": step})
            stop = conn.execute(_SELECT_STOP_REQUEST, {"trial_id": trial_id}).scalar()
        return None if stop is None else str(stop)

    def reports(self, sweep_id: int, number: int | None = None) -> list[Report]:
        query = (
            select(schema.trials.c.number, schema.reports.c.step, schema.reports.c.metrics)
            .join(schema.trials, schema.trials.c.id == schema.reports.c.trial_id)
            .where(schema.trials.c.sweep_id == sweep_id)
        )
        if number is not None:
            query = query.where(schema.trials.c.number == number)
        with self.database.read() as conn:
            rows = conn.execute(query.order_by(schema.trials.c.number, schema.reports.c.id)).all()
        return [Report(number=int(r[0]), step=int(r[1]), metrics=floats(r[2])) for r in rows]

    def running_averages(self, sweep_id: int, trial_id: int, step: float) -> list[float]:
        """Each other trial's mean score over its reports at steps <= `step` (the median rule's question)."""
        rp = schema.reports
        with self.database.read() as conn:
            rows = conn.execute(
                select(func.avg(rp.c.score))
                .where(rp.c.sweep_id == sweep_id, rp.c.step <= step, rp.c.trial_id != trial_id, rp.c.score.is_not(None))
                .group_by(rp.c.trial_id)
            ).all()
        return [float(row[0]) for row in rows]
