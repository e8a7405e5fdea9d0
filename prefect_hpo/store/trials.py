"""The store's trials: created, moved between states, read back (the `hpo_trials` rows).

State changes go through `_transition`, which refuses any move that `records.ALLOWED_TRANSITIONS`
does not list.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from prefect_hpo.errors import StoreError
from prefect_hpo.records import ALLOWED_TRANSITIONS, Config, Outcome, TrialRecord, TrialState
from prefect_hpo.store import schema
from prefect_hpo.store.database import StorePart
from prefect_hpo.store.outages import guard_public_methods
from prefect_hpo.store.rows import SELECT_TRIAL, UPDATE_TRIAL, clean, first_finite, inserted_id, record

_INSERT_TRIAL = schema.trials.insert()


@guard_public_methods
class Trials(StorePart):
    """One row per trial of a sweep, (sweep, number) unique; each run of it an attempt."""

    def next_number(self, sweep_id: int) -> int:
        with self.database.read() as conn:
            top = conn.execute(
                select(func.max(schema.trials.c.number)).where(schema.trials.c.sweep_id == sweep_id)
            ).scalar()
        return 0 if top is None else int(top) + 1

    def create_trial(
        self,
        sweep_id: int,
        number: int,
        config: Config,
        config_hash: str,
        state: TrialState = TrialState.RUNNING,
        *,
        values: Sequence[float] | None = None,
        metrics: Mapping[str, float] | None = None,
        reason: str | None = None,
        duplicate_of: int | None = None,
        bracket: int = 0,
        lineage: Mapping[str, Any] | None = None,
    ) -> TrialRecord:
        """Insert trial `number`; RUNNING trials get their start time now."""
        now = time.time()
        row = {
            "sweep_id": sweep_id,
            "number": number,
            "attempt": 1,
            "failures": 0,
            "state": state.value,
            "config": clean(config),
            "config_hash": config_hash,
            "values": clean(list(values)) if values is not None else None,
            "value": first_finite(values),
            "metrics": clean(dict(metrics)) if metrics else None,
            "reason": reason,
            "duplicate_of": duplicate_of,
            "bracket": bracket,
            "lineage": clean(dict(lineage)) if lineage is not None else None,
            "created_at": now,
            "started_at": now if state == TrialState.RUNNING else None,
            "finished_at": now if state.is_finished else None,
        }
        try:
            with self.database.write() as conn:
                trial_id = inserted_id(conn.execute(_INSERT_TRIAL, row))
        except IntegrityError:
            raise StoreError(
                f"trial {number} of sweep {sweep_id} already exists; another driver may be running this sweep"
            ) from None
        return record({**row, "id": trial_id})

    def set_task_run(self, trial_id: int, task_run_id: str) -> None:
        with self.database.write() as conn:
            conn.execute(update(schema.trials).where(schema.trials.c.id == trial_id).values(task_run_id=task_run_id))

    def finish_trial(self, trial_id: int, outcome: Outcome, *, task_run_id: str | None = None) -> TrialRecord:
        """Record how a RUNNING trial ended; refuses a trial that has already ended."""
        with self.database.write() as conn:
            return _transition(conn, trial_id, outcome.state, _ended(outcome, task_run_id))

    def end_attempt(
        self, trial_id: int, attempt: int, outcome: Outcome, *, task_run_id: str | None = None
    ) -> TrialRecord:
        """Record how attempt `attempt` of a trial ended, unless its end is recorded already: the trial as
        stored either way. The first end recorded wins.

        Two can report one attempt's end: a trial's worker process records the outcome of its training
        itself (so that a result is kept when the sweep's parent dies before it hears of it), and the
        parent records what it saw from outside (a time limit, a cancel, the worker's death), which may
        come just after the worker's own record."""
        with self.database.write() as conn:
            row = conn.execute(SELECT_TRIAL, {"trial_id": trial_id}).mappings().one()
            if row["state"] != TrialState.RUNNING.value or int(row["attempt"]) != attempt:
                return record(row)
            return _transition(conn, trial_id, outcome.state, _ended(outcome, task_run_id), row=row)

    def resume_trial(self, trial_id: int) -> TrialRecord:
        """Start the next attempt of a PAUSED or FAIL_RECOVERABLE trial: RUNNING again, attempt + 1,
        stop request and heartbeat cleared."""
        with self.database.write() as conn:
            attempt = conn.execute(select(schema.trials.c.attempt).where(schema.trials.c.id == trial_id)).scalar_one()
            return _transition(
                conn,
                trial_id,
                TrialState.RUNNING,
                {
                    "attempt": int(attempt) + 1,
                    "stop_requested": None,
                    "reason": None,
                    "finished_at": None,
                    "heartbeat_at": None,
                },
            )

    def leave_paused(self, sweep_id: int, reason: str) -> list[TrialRecord]:
        """Mark every trial still PAUSED as PRUNED (the sweep ends without promoting them)."""
        out = []
        for trial in self.trials(sweep_id, [TrialState.PAUSED]):
            with self.database.write() as conn:
                out.append(_transition(conn, trial.id, TrialState.PRUNED, {"reason": reason}))
        return out

    def give_up(self, trial_id: int, reason: str) -> TrialRecord:
        """A FAIL_RECOVERABLE trial that will not be retried becomes FAIL."""
        with self.database.write() as conn:
            return _transition(conn, trial_id, TrialState.FAIL, {"reason": reason})

    def request_stop(self, trial_id: int, reason: str) -> None:
        """Ask a running trial to stop; it sees the request at its next report."""
        with self.database.write() as conn:
            conn.execute(
                update(schema.trials)
                .where(schema.trials.c.id == trial_id, schema.trials.c.stop_requested.is_(None))
                .values(stop_requested=reason)
            )

    def stop_request(self, trial_id: int) -> str | None:
        with self.database.read() as conn:
            stop = conn.execute(select(schema.trials.c.stop_requested).where(schema.trials.c.id == trial_id)).scalar()
        return None if stop is None else str(stop)

    def trial(self, sweep_id: int, number: int) -> TrialRecord:
        with self.database.read() as conn:
            row = (
                conn.execute(
                    select(schema.trials).where(schema.trials.c.sweep_id == sweep_id, schema.trials.c.number == number)
                )
                .mappings()
                .first()
            )
        if row is None:
            raise StoreError(f"sweep {sweep_id} has no trial {number}")
        return record(row)

    def trials(self, sweep_id: int, states: Iterable[TrialState] | None = None) -> list[TrialRecord]:
        query = select(schema.trials).where(schema.trials.c.sweep_id == sweep_id)
        if states is not None:
            query = query.where(schema.trials.c.state.in_([s.value for s in states]))
        with self.database.read() as conn:
            rows = conn.execute(query.order_by(schema.trials.c.number)).mappings().all()
        return [record(r) for r in rows]

    def find_config(self, sweep_id: int, config_hash: str, states: Iterable[TrialState]) -> TrialRecord | None:
        """The earliest trial with this configuration in one of `states`, if any."""
        with self.database.read() as conn:
            row = (
                conn.execute(
                    select(schema.trials)
                    .where(
                        schema.trials.c.sweep_id == sweep_id,
                        schema.trials.c.config_hash == config_hash,
                        schema.trials.c.state.in_([s.value for s in states]),
                    )
                    .order_by(schema.trials.c.number)
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return None if row is None else record(row)


def _transition(
    conn: Connection,
    trial_id: int,
    target: TrialState,
    values: Mapping[str, Any],
    *,
    row: RowMapping | None = None,
) -> TrialRecord:
    """Move a trial to `target` with `values`, if `records.ALLOWED_TRANSITIONS` allows it (`row`: the
    trial as this transaction has read it already)."""
    if row is None:
        row = conn.execute(SELECT_TRIAL, {"trial_id": trial_id}).mappings().one()
    current = TrialState(row["state"])
    if target not in ALLOWED_TRANSITIONS.get(current, frozenset()):
        raise StoreError(f"trial {row['number']}: cannot move from {current.value} to {target.value}")
    if "duration" in values and row["duration"] is not None and current == TrialState.RUNNING:
        values = {**values, "duration": row["duration"] + values["duration"]}  # a resumed trial adds up
    if target == TrialState.FAIL_RECOVERABLE:
        values = {**values, "failures": int(row["failures"] or 0) + 1}
    conn.execute(UPDATE_TRIAL, {"trial_id": trial_id, **values, "state": target.value})
    return record({**row, **values, "state": target.value})


def _ended(outcome: Outcome, task_run_id: str | None) -> dict[str, Any]:
    """The columns an attempt's end sets."""
    values: dict[str, Any] = {
        "values": clean(list(outcome.values)) if outcome.values is not None else None,
        "value": first_finite(outcome.values),
        "metrics": clean(dict(outcome.metrics)) if outcome.metrics else None,
        "last_step": outcome.last_step,
        "error": outcome.error,
        "reason": outcome.reason,
        "duration": outcome.duration,
        "worker": outcome.worker,
        "finished_at": time.time(),
    }
    if outcome.devices or outcome.cpu_threads is not None:
        values["devices"] = ",".join(outcome.devices) or None
        values["cpu_threads"] = outcome.cpu_threads
    if outcome.last_step is None:
        del values["last_step"]  # keep what the reports recorded
    if task_run_id is not None:
        values["task_run_id"] = task_run_id
    return values
