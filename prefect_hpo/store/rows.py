"""How values travel between Python and the store's tables: JSON-safe copies, trial rows as records.

Also the statements every trial's writes run, built once: the column values travel as parameters.
Building them per call (`insert().values(**row)`, `update().where(...).values(...)`) cost more of the
parent's time than running them, and the parent sets the pace of a sweep of short trials.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import CursorResult, bindparam, select, update
from sqlalchemy.engine import RowMapping

from prefect_hpo.errors import StoreError
from prefect_hpo.records import TrialRecord, TrialState
from prefect_hpo.store import schema

SELECT_TRIAL = select(schema.trials).where(schema.trials.c.id == bindparam("trial_id"))
# SET takes the columns named in the parameters; `trial_id` names no column, so it only fills WHERE
UPDATE_TRIAL = update(schema.trials).where(schema.trials.c.id == bindparam("trial_id"))


def clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (PostgreSQL's JSON refuses NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def finite_or_none(value: float | None) -> float | None:
    """A score as a column keeps it: NULL for NaN and infinities (they sort nowhere)."""
    return value if value is not None and math.isfinite(value) else None


def nan_for_none(value: Any) -> float:
    """A score column as a float: NaN where the column is NULL."""
    return math.nan if value is None else float(value)


def first_finite(values: Sequence[float] | None) -> float | None:
    """The first objective's value as the `value` column keeps it (for ordering), if it is a finite number."""
    if not values:
        return None
    first = values[0]
    return float(first) if isinstance(first, int | float) and math.isfinite(first) else None


def floats(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """Stored metrics as floats, NaN where JSON kept null."""
    if not metrics:
        return {}
    return {k: nan_for_none(v) for k, v in metrics.items()}


def inserted_id(result: CursorResult[Any]) -> int:
    """The primary key of the row an INSERT of one row made."""
    key = result.inserted_primary_key
    if key is None:
        raise StoreError("the database did not return the id of the row just inserted")
    return int(key[0])


def _timestamp(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def record(row: RowMapping | Mapping[str, Any]) -> TrialRecord:
    """A trials row (or the values just written to one) as a TrialRecord."""
    values = row.get("values")
    return TrialRecord(
        id=int(row["id"]),
        sweep_id=int(row["sweep_id"]),
        number=int(row["number"]),
        attempt=int(row.get("attempt") or 1),
        failures=int(row.get("failures") or 0),
        config=dict(row["config"]),
        config_hash=str(row["config_hash"]),
        state=TrialState(row["state"]),
        values=None if values is None else tuple(nan_for_none(v) for v in values),
        metrics=floats(row.get("metrics")),
        last_step=row.get("last_step"),
        error=row.get("error"),
        reason=row.get("reason"),
        created_at=_timestamp(row.get("created_at")),
        started_at=_timestamp(row.get("started_at")),
        finished_at=_timestamp(row.get("finished_at")),
        duration=row.get("duration"),
        worker=row.get("worker"),
        task_run_id=row.get("task_run_id"),
        duplicate_of=row.get("duplicate_of"),
        stop_requested=row.get("stop_requested"),
        bracket=int(row.get("bracket") or 0),
        lineage=row.get("lineage"),
        devices=tuple(row["devices"].split(",")) if row.get("devices") else (),
        cpu_threads=row.get("cpu_threads"),
    )
