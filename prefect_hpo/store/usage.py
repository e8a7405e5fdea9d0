"""What a sweep has used of its budget, counted from its trials in the store (`budget.Usage`)."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from prefect_hpo.budget import Usage
from prefect_hpo.records import TrialState
from prefect_hpo.store import schema
from prefect_hpo.store.database import StorePart
from prefect_hpo.store.outages import guard_public_methods

#: The states whose trials the budget counts: duplicates and rejected configurations cost nothing.
_BUDGET_STATES = [s.value for s in TrialState if s not in (TrialState.PRUNED_DUPLICATE, TrialState.PRUNED_INVALID)]


@guard_public_methods
class BudgetUsage(StorePart):
    """Trial counts, times and steps, as the budget counts them (duplicates and rejections cost nothing)."""

    def usage(self, sweep_id: int, now: float | None = None) -> Usage:
        """Trial counts and times, as the budget counts them."""
        t = schema.trials
        with self.database.read() as conn:
            rows = conn.execute(
                select(t.c.state, func.count(), func.coalesce(func.sum(t.c.duration), 0.0))
                .where(t.c.sweep_id == sweep_id, t.c.state.in_(_BUDGET_STATES))
                .group_by(t.c.state)
            ).all()
            started_at = conn.execute(select(schema.sweeps.c.started_at).where(schema.sweeps.c.id == sweep_id)).scalar()
            steps = conn.execute(
                select(func.coalesce(func.sum(t.c.last_step), 0)).where(
                    t.c.sweep_id == sweep_id, t.c.state.in_(_BUDGET_STATES)
                )
            ).scalar()
        by_state = {TrialState(r[0]): (int(r[1]), float(r[2])) for r in rows}
        running = by_state.get(TrialState.RUNNING, (0, 0.0))[0]
        return Usage(
            trials_started=sum(n for n, _ in by_state.values()),
            trials_finished=sum(n for s, (n, _) in by_state.items() if s.is_finished),
            trials_failed=sum(n for s, (n, _) in by_state.items() if s.is_failure),
            running=running,
            elapsed=0.0 if started_at is None else (now or time.time()) - float(started_at),
            compute_time=sum(d for _, d in by_state.values()),
            total_steps=int(steps or 0),
        )

    def total_steps(self, sweep_id: int) -> int:
        """Steps run by the sweep's trials so far: the last step each reached, running trials included."""
        t = schema.trials
        with self.database.read() as conn:
            steps = conn.execute(
                select(func.coalesce(func.sum(t.c.last_step), 0)).where(
                    t.c.sweep_id == sweep_id, t.c.state.in_(_BUDGET_STATES)
                )
            ).scalar()
        return int(steps or 0)
