"""The trial store on SQLAlchemy: SQLite by default, any SQLAlchemy URL (PostgreSQL for shared sweeps).

Every write is its own short transaction, committed before the call returns, so
whatever the parent or a trial process has been told is already durable. State
changes go through `_transition`, which refuses any move that
`records.ALLOWED_TRANSITIONS` does not list.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, create_engine, event, func, select, text, update
from sqlalchemy.engine import Connection, RowMapping, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from prefect_hpo.budget import Usage
from prefect_hpo.errors import StoreError, SweepBusyError, SweepConflictError
from prefect_hpo.records import ALLOWED_TRANSITIONS, Config, Outcome, Report, TrialRecord, TrialState
from prefect_hpo.store import migrate, schema
from prefect_hpo.store.outages import OUTAGE_TIMEOUT_S, guard_public_methods
from prefect_hpo.store.urls import mask_url

SQLITE_BUSY_TIMEOUT_MS = 30_000
_SCHEMA_LOCK_KEY = 0x70685F68706F  # an arbitrary constant: PostgreSQL advisory lock for migrations
#: The states whose trials the budget counts: duplicates and rejected configurations cost nothing.
_BUDGET_STATES = [s.value for s in TrialState if s not in (TrialState.PRUNED_DUPLICATE, TrialState.PRUNED_INVALID)]
# The per-trial statements, built once: the column values travel as parameters. Building them per call
# (`insert().values(**row)`, `update().where(...).values(...)`) cost more of the parent's time than
# running them, and the parent sets the pace of a sweep of short trials.
_INSERT_TRIAL = schema.trials.insert()
_SELECT_TRIAL = select(schema.trials).where(schema.trials.c.id == bindparam("trial_id"))
# SET takes the columns named in the parameters; `trial_id` names no column, so it only fills WHERE
_UPDATE_TRIAL = update(schema.trials).where(schema.trials.c.id == bindparam("trial_id"))
_INSERT_REPORT = schema.reports.insert()
_SELECT_SWEEP_OF_TRIAL = select(schema.trials.c.sweep_id).where(schema.trials.c.id == bindparam("trial_id"))
_SELECT_STOP_REQUEST = select(schema.trials.c.stop_requested).where(schema.trials.c.id == bindparam("trial_id"))


def _clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (PostgreSQL's JSON refuses NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def fingerprint(space: Mapping[str, Any], objectives: Sequence[Mapping[str, Any]]) -> str:
    """What a reused sweep name must match: the search space and the objectives."""
    text = json.dumps({"space": space, "objectives": list(objectives)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_writer_connection(dbapi_connection: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_connection, record)
    dbapi_connection.isolation_level = None  # the driver must not BEGIN on its own: _begin_immediate does


def _begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


@guard_public_methods
class SqlTrialStore:
    """The single source of truth for sweeps, trials and reports.

    Every public method waits out a database that is briefly unreachable (up to `outage_timeout`
    seconds) and ends with a StoreError on a full disk: see `prefect_hpo.store.outages`.
    """

    def __init__(self, url: str, *, outage_timeout: float = OUTAGE_TIMEOUT_S) -> None:
        self.url = url
        self.safe_url = mask_url(url)
        self.outage_timeout = outage_timeout
        self._calls = threading.local()
        try:
            parsed = make_url(url)
        except Exception:  # noqa: BLE001 - SQLAlchemy raises several types for a bad URL
            raise StoreError(
                f"storage URL {self.safe_url!r} is not a database URL; "
                "use e.g. 'sqlite:///hpo.db' or 'postgresql+psycopg://user@host/db'"
            ) from None
        self._is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"future": True}
        if self._is_sqlite:
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
            if parsed.database in (None, "", ":memory:"):
                raise StoreError(
                    "storage: an in-memory SQLite database cannot be shared with trial processes; "
                    "give a file, e.g. 'sqlite:///hpo.db'"
                )
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self._engine: Engine = create_engine(url, **kwargs)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(
                f"cannot open storage {self.safe_url!r}: {exc}; use e.g. 'sqlite:///hpo.db' "
                "or 'postgresql+psycopg://user@host/db' (with its driver installed)"
            ) from None
        self._writer = self._engine
        if self._is_sqlite:
            event.listen(self._engine, "connect", _sqlite_pragmas)
            # Writes take SQLite's write lock up front (BEGIN IMMEDIATE): a transaction that reads and
            # then writes would otherwise get "database is locked" at once, without waiting, whenever
            # another process holds the lock (SQLite's deadlock avoidance). Reads stay deferred.
            self._writer = create_engine(url, **kwargs)
            event.listen(self._writer, "connect", _sqlite_writer_connection)
            event.listen(self._writer, "begin", _begin_immediate)
        self._initialise()

    def _initialise(self) -> None:
        """Migrate the tables to this prefect_hpo's schema; a store already there costs one query."""
        try:
            with self._engine.connect() as conn:
                if migrate.current_revision(conn) == migrate.HEAD:
                    return
            with self._writer.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # one migrator at a time; the others then find the store migrated
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
                migrate.upgrade(conn, where=f"storage {self.safe_url!r}")
        except OperationalError as exc:
            raise StoreError(
                f"cannot reach storage {self.safe_url!r}: {exc.orig}; check that the database "
                "server runs and the URL is right"
            ) from None

    def close(self) -> None:
        self._engine.dispose()
        self._writer.dispose()

    # ---- sweeps -------------------------------------------------------------

    def open_sweep(
        self,
        name: str,
        *,
        space: Mapping[str, Any],
        objectives: Sequence[Mapping[str, Any]],
        strategy: str,
        budget: Mapping[str, Any],
        spec: Mapping[str, Any] | None = None,
        fork: bool = False,
    ) -> int:
        """Create the sweep `name`, or open it if it exists with the same space and objectives.

        With a different space or objective the name is refused, unless `fork`: then the sweep runs
        as `<name>-fork-<k>`, the first fork of that name with the same space and objectives, or a
        new one; the original is left as it is. `spec`, when the sweep runs from a SweepSpec, is kept
        so that it can be run again by name."""
        fp = fingerprint(space, objectives)
        now = time.time()
        with self._writer.begin() as conn:
            row = conn.execute(select(schema.sweeps).where(schema.sweeps.c.name == name)).mappings().first()
            if row is not None and row["fingerprint"] != fp:
                if not fork:
                    raise SweepConflictError(
                        f"sweep {name!r} already exists in {self.safe_url!r} with a different search "
                        "space or objective; give the sweep another name to start afresh, or pass "
                        "fork=True to run it as a fork of that name (the existing sweep is kept)"
                    )
                name, row = self._fork_of(conn, name, fp)
            if row is not None:
                kept = {"spec": _clean(dict(spec))} if spec is not None else {}
                conn.execute(
                    update(schema.sweeps)
                    .where(schema.sweeps.c.id == row["id"])
                    .values(budget=_clean(dict(budget)), strategy=strategy, **kept)
                )
                return int(row["id"])
            try:
                result = conn.execute(
                    schema.sweeps.insert().values(
                        name=name,
                        uid=uuid.uuid4().hex,
                        space=_clean(dict(space)),
                        objectives=list(objectives),
                        strategy=strategy,
                        budget=_clean(dict(budget)),
                        fingerprint=fp,
                        status="created",
                        created_at=now,
                        spec=_clean(dict(spec)) if spec is not None else None,
                    )
                )
            except IntegrityError:
                raise StoreError(f"sweep {name!r} was created by another process at the same moment; retry") from None
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def fork_name(self, name: str, space: Mapping[str, Any], objectives: Sequence[Mapping[str, Any]]) -> str:
        """The name `open_sweep(name, ..., fork=True)` runs this space and these objectives under now."""
        fp = fingerprint(space, objectives)
        with self._engine.connect() as conn:
            row = conn.execute(select(schema.sweeps.c.fingerprint).where(schema.sweeps.c.name == name)).first()
            return name if row is None or row[0] == fp else self._fork_of(conn, name, fp)[0]

    @staticmethod
    def _fork_of(conn: Connection, name: str, fp: str) -> tuple[str, RowMapping | None]:
        """The fork of `name` with fingerprint `fp` (name, row), or the name a new fork takes (name, None)."""
        s = schema.sweeps
        forks = conn.execute(select(s).where(s.c.name.like(f"{name}-fork-%"))).mappings().all()
        taken = set()
        for fork_row in forks:
            fork_name = str(fork_row["name"])
            suffix = fork_name[len(name) + len("-fork-") :]
            if fork_name.startswith(f"{name}-fork-") and suffix.isdigit():  # LIKE's '_' matches any character
                if fork_row["fingerprint"] == fp:
                    return str(fork_row["name"]), fork_row
                taken.add(int(suffix))
        k = 1
        while k in taken:
            k += 1
        return f"{name}-fork-{k}", None

    def sweep_id(self, name: str) -> int:
        with self._engine.connect() as conn:
            row = conn.execute(select(schema.sweeps.c.id).where(schema.sweeps.c.name == name)).first()
        if row is None:
            raise StoreError(f"no sweep named {name!r} in {self.safe_url!r}; list them with store.sweep_names()")
        return int(row[0])

    def sweep(self, sweep_id: int) -> dict[str, Any]:
        with self._engine.connect() as conn:
            row = conn.execute(select(schema.sweeps).where(schema.sweeps.c.id == sweep_id)).mappings().one()
        return dict(row)

    def sweep_names(self) -> list[str]:
        with self._engine.connect() as conn:
            return [r[0] for r in conn.execute(select(schema.sweeps.c.name).order_by(schema.sweeps.c.id))]

    def start_sweep(self, sweep_id: int, flow_run_id: str | None) -> None:
        with self._writer.begin() as conn:
            conn.execute(
                update(schema.sweeps)
                .where(schema.sweeps.c.id == sweep_id)
                .values(
                    status="running",
                    started_at=time.time(),
                    finished_at=None,
                    stop_reason=None,
                    flow_run_id=flow_run_id,
                )
            )

    def claim_sweep(
        self, sweep_id: int, owner: str, stale_after: float, alive: Callable[[str], bool]
    ) -> tuple[str | None, str | None]:
        """Make `owner` the parent that runs the sweep; returns the (owner, flow run id) it took over.

        Refused with SweepBusyError while another owner holds it: one whose heartbeat is younger than
        `stale_after` seconds and that `alive(owner)` does not know to be dead.
        """
        s = schema.sweeps
        with self._writer.begin() as conn:
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
        with self._writer.begin() as conn:
            done = conn.execute(update(s).where(s.c.id == sweep_id, s.c.owner == owner).values(owner_beat=time.time()))
        return bool(done.rowcount)

    def release_sweep(self, sweep_id: int, owner: str) -> None:
        s = schema.sweeps
        with self._writer.begin() as conn:
            conn.execute(update(s).where(s.c.id == sweep_id, s.c.owner == owner).values(owner=None, owner_beat=None))

    def finish_sweep(self, sweep_id: int, status: str, reason: str | None) -> None:
        with self._writer.begin() as conn:
            conn.execute(
                update(schema.sweeps)
                .where(schema.sweeps.c.id == sweep_id)
                .values(status=status, stop_reason=reason, finished_at=time.time())
            )

    # ---- trials -------------------------------------------------------------

    def next_number(self, sweep_id: int) -> int:
        with self._engine.connect() as conn:
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
            "state": state.value,
            "config": _clean(config),
            "config_hash": config_hash,
            "values": _clean(list(values)) if values is not None else None,
            "value": _first_finite(values),
            "metrics": _clean(dict(metrics)) if metrics else None,
            "reason": reason,
            "duplicate_of": duplicate_of,
            "bracket": bracket,
            "lineage": _clean(dict(lineage)) if lineage is not None else None,
            "created_at": now,
            "started_at": now if state == TrialState.RUNNING else None,
            "finished_at": now if state.is_finished else None,
        }
        try:
            with self._writer.begin() as conn:
                result = conn.execute(_INSERT_TRIAL, row)
                trial_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        except IntegrityError:
            raise StoreError(
                f"trial {number} of sweep {sweep_id} already exists; another driver may be running this sweep"
            ) from None
        return _record({**row, "id": trial_id})

    def set_task_run(self, trial_id: int, task_run_id: str) -> None:
        with self._writer.begin() as conn:
            conn.execute(update(schema.trials).where(schema.trials.c.id == trial_id).values(task_run_id=task_run_id))

    def finish_trial(self, trial_id: int, outcome: Outcome, *, task_run_id: str | None = None) -> TrialRecord:
        """Record how a RUNNING trial ended; refuses a trial that has already ended."""
        values: dict[str, Any] = {
            "values": _clean(list(outcome.values)) if outcome.values is not None else None,
            "value": _first_finite(outcome.values),
            "metrics": _clean(dict(outcome.metrics)) if outcome.metrics else None,
            "last_step": outcome.last_step,
            "error": outcome.error,
            "reason": outcome.reason,
            "duration": outcome.duration,
            "worker": outcome.worker,
            "finished_at": time.time(),
        }
        if outcome.last_step is None:
            del values["last_step"]  # keep what the reports recorded
        if task_run_id is not None:
            values["task_run_id"] = task_run_id
        with self._writer.begin() as conn:
            return self._transition(conn, trial_id, outcome.state, values)

    def _transition(
        self, conn: Connection, trial_id: int, target: TrialState, values: Mapping[str, Any]
    ) -> TrialRecord:
        row = conn.execute(_SELECT_TRIAL, {"trial_id": trial_id}).mappings().one()
        current = TrialState(row["state"])
        if target not in ALLOWED_TRANSITIONS.get(current, frozenset()):
            raise StoreError(f"trial {row['number']}: cannot move from {current.value} to {target.value}")
        if "duration" in values and row["duration"] is not None and current == TrialState.RUNNING:
            values = {**values, "duration": row["duration"] + values["duration"]}  # a resumed trial adds up
        conn.execute(_UPDATE_TRIAL, {"trial_id": trial_id, **values, "state": target.value})
        return _record({**row, **values, "state": target.value})

    def resume_trial(self, trial_id: int) -> TrialRecord:
        """Start the next attempt of a PAUSED or FAIL_RECOVERABLE trial: RUNNING again, attempt + 1,
        stop request and heartbeat cleared."""
        with self._writer.begin() as conn:
            attempt = conn.execute(select(schema.trials.c.attempt).where(schema.trials.c.id == trial_id)).scalar_one()
            return self._transition(
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
            with self._writer.begin() as conn:
                out.append(self._transition(conn, trial.id, TrialState.PRUNED, {"reason": reason}))
        return out

    def paused_at_rungs(self, sweep_id: int) -> list[tuple[int, int, int, float]]:
        """(trial number, bracket, highest rung level reached, score there) of every PAUSED trial."""
        r, t = schema.rungs, schema.trials
        top = (
            select(r.c.trial_id, func.max(r.c.level).label("level"))
            .where(r.c.sweep_id == sweep_id)
            .group_by(r.c.trial_id)
            .subquery()
        )
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(t.c.number, r.c.bracket, r.c.level, r.c.score)
                .join(top, top.c.trial_id == t.c.id)
                .join(r, (r.c.trial_id == t.c.id) & (r.c.level == top.c.level))
                .where(t.c.sweep_id == sweep_id, t.c.state == TrialState.PAUSED.value)
                .order_by(t.c.number)
            ).all()
        return [(int(a), int(b), int(c), math.nan if d is None else float(d)) for a, b, c, d in rows]

    def rung_scores(self, sweep_id: int, bracket: int, level: int) -> list[float]:
        """Every score recorded at one rung, in arrival order."""
        r = schema.rungs
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(r.c.score)
                .where(r.c.sweep_id == sweep_id, r.c.bracket == bracket, r.c.level == level)
                .order_by(r.c.id)
            ).all()
        return [math.nan if row[0] is None else float(row[0]) for row in rows]

    def beat(self, trial_id: int) -> None:
        """A running trial's sign of life (remote workers send one every few seconds)."""
        with self._writer.begin() as conn:
            conn.execute(update(schema.trials).where(schema.trials.c.id == trial_id).values(heartbeat_at=time.time()))

    def heartbeat(self, trial_id: int) -> float | None:
        """When the trial last gave a sign of life (unix seconds), if ever."""
        with self._engine.connect() as conn:
            beat = conn.execute(select(schema.trials.c.heartbeat_at).where(schema.trials.c.id == trial_id)).scalar()
        return None if beat is None else float(beat)

    def give_up(self, trial_id: int, reason: str) -> TrialRecord:
        """A FAIL_RECOVERABLE trial that will not be retried becomes FAIL."""
        with self._writer.begin() as conn:
            return self._transition(conn, trial_id, TrialState.FAIL, {"reason": reason})

    def request_stop(self, trial_id: int, reason: str) -> None:
        """Ask a running trial to stop; it sees the request at its next report."""
        with self._writer.begin() as conn:
            conn.execute(
                update(schema.trials)
                .where(schema.trials.c.id == trial_id, schema.trials.c.stop_requested.is_(None))
                .values(stop_requested=reason)
            )

    def add_report(
        self, trial_id: int, step: int, metrics: Mapping[str, float], *, sweep_id: int = 0, score: float | None = None
    ) -> str | None:
        """Store one intermediate report; return the trial's stop request, if any."""
        with self._writer.begin() as conn:
            if not sweep_id:
                sweep_id = conn.execute(_SELECT_SWEEP_OF_TRIAL, {"trial_id": trial_id}).scalar_one()
            conn.execute(
                _INSERT_REPORT,
                {
                    "trial_id": trial_id,
                    "sweep_id": sweep_id,
                    "step": step,
                    "metrics": _clean(dict(metrics)),
                    "score": score if score is not None and math.isfinite(score) else None,
                    "created_at": time.time(),
                },
            )
            conn.execute(_UPDATE_TRIAL, {"trial_id": trial_id, "last_step": step})
            stop = conn.execute(_SELECT_STOP_REQUEST, {"trial_id": trial_id}).scalar()
        return None if stop is None else str(stop)

    def record_rung(self, sweep_id: int, trial_id: int, bracket: int, level: int, score: float) -> list[float]:
        """Record a trial's score at a rung; the rung's scores so far in arrival order (NaN for NaN)."""
        r = schema.rungs
        with self._writer.begin() as conn:
            mine = conn.execute(select(r.c.id).where(r.c.trial_id == trial_id, r.c.level == level)).scalar()
            if mine is None:
                mine = conn.execute(
                    r.insert().values(
                        sweep_id=sweep_id,
                        trial_id=trial_id,
                        bracket=bracket,
                        level=level,
                        score=score if math.isfinite(score) else None,
                        created_at=time.time(),
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            rows = conn.execute(
                select(r.c.score)
                .where(r.c.sweep_id == sweep_id, r.c.bracket == bracket, r.c.level == level, r.c.id <= mine)
                .order_by(r.c.id)
            ).all()
        return [math.nan if row[0] is None else float(row[0]) for row in rows]

    def running_averages(self, sweep_id: int, trial_id: int, step: float) -> list[float]:
        """Each other trial's mean score over its reports at steps <= `step`."""
        rp = schema.reports
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(func.avg(rp.c.score))
                .where(rp.c.sweep_id == sweep_id, rp.c.step <= step, rp.c.trial_id != trial_id, rp.c.score.is_not(None))
                .group_by(rp.c.trial_id)
            ).all()
        return [float(row[0]) for row in rows]

    def rungs(self, sweep_id: int, after_id: int = 0) -> list[tuple[int, int, int, int, float]]:
        """Rung records (id, trial number, bracket, level, score) with id > `after_id`, in arrival order."""
        r, t = schema.rungs, schema.trials
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(r.c.id, t.c.number, r.c.bracket, r.c.level, r.c.score)
                .join(t, t.c.id == r.c.trial_id)
                .where(r.c.sweep_id == sweep_id, r.c.id > after_id)
                .order_by(r.c.id)
            ).all()
        return [(int(a), int(b), int(c), int(d), math.nan if e is None else float(e)) for a, b, c, d, e in rows]

    def stop_request(self, trial_id: int) -> str | None:
        with self._engine.connect() as conn:
            stop = conn.execute(select(schema.trials.c.stop_requested).where(schema.trials.c.id == trial_id)).scalar()
        return None if stop is None else str(stop)

    def trial(self, sweep_id: int, number: int) -> TrialRecord:
        with self._engine.connect() as conn:
            row = (
                conn.execute(
                    select(schema.trials).where(schema.trials.c.sweep_id == sweep_id, schema.trials.c.number == number)
                )
                .mappings()
                .first()
            )
        if row is None:
            raise StoreError(f"sweep {sweep_id} has no trial {number}")
        return _record(row)

    def trials(self, sweep_id: int, states: Iterable[TrialState] | None = None) -> list[TrialRecord]:
        query = select(schema.trials).where(schema.trials.c.sweep_id == sweep_id)
        if states is not None:
            query = query.where(schema.trials.c.state.in_([s.value for s in states]))
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(schema.trials.c.number)).mappings().all()
        return [_record(r) for r in rows]

    def find_config(self, sweep_id: int, config_hash: str, states: Iterable[TrialState]) -> TrialRecord | None:
        """The earliest trial with this configuration in one of `states`, if any."""
        with self._engine.connect() as conn:
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
        return None if row is None else _record(row)

    def reports(self, sweep_id: int, number: int | None = None) -> list[Report]:
        query = (
            select(schema.trials.c.number, schema.reports.c.step, schema.reports.c.metrics)
            .join(schema.trials, schema.trials.c.id == schema.reports.c.trial_id)
            .where(schema.trials.c.sweep_id == sweep_id)
        )
        if number is not None:
            query = query.where(schema.trials.c.number == number)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(schema.trials.c.number, schema.reports.c.id)).all()
        return [Report(number=int(r[0]), step=int(r[1]), metrics=_floats(r[2])) for r in rows]

    def usage(self, sweep_id: int, now: float | None = None) -> Usage:
        """Trial counts and times, as the budget counts them."""
        t = schema.trials
        with self._engine.connect() as conn:
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
        with self._engine.connect() as conn:
            steps = conn.execute(
                select(func.coalesce(func.sum(t.c.last_step), 0)).where(
                    t.c.sweep_id == sweep_id, t.c.state.in_(_BUDGET_STATES)
                )
            ).scalar()
        return int(steps or 0)


def _first_finite(values: Sequence[float] | None) -> float | None:
    if not values:
        return None
    first = values[0]
    return float(first) if isinstance(first, int | float) and math.isfinite(first) else None


def _floats(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    if not metrics:
        return {}
    return {k: (math.nan if v is None else float(v)) for k, v in metrics.items()}


def _record(row: RowMapping | Mapping[str, Any]) -> TrialRecord:
    values = row.get("values")
    return TrialRecord(
        id=int(row["id"]),
        sweep_id=int(row["sweep_id"]),
        number=int(row["number"]),
        attempt=int(row.get("attempt") or 1),
        config=dict(row["config"]),
        config_hash=str(row["config_hash"]),
        state=TrialState(row["state"]),
        values=None if values is None else tuple(math.nan if v is None else float(v) for v in values),
        metrics=_floats(row.get("metrics")),
        last_step=row.get("last_step"),
        error=row.get("error"),
        reason=row.get("reason"),
        created_at=_ts(row.get("created_at")),
        started_at=_ts(row.get("started_at")),
        finished_at=_ts(row.get("finished_at")),
        duration=row.get("duration"),
        worker=row.get("worker"),
        task_run_id=row.get("task_run_id"),
        duplicate_of=row.get("duplicate_of"),
        stop_requested=row.get("stop_requested"),
        bracket=int(row.get("bracket") or 0),
        lineage=row.get("lineage"),
    )
