"""The one database a trial store opens: its engines, its write transactions, its schema on opening.

Every part of the store (`store.sweeps`, `store.trials`, ...) reads and writes through one `Database`:
the same engines, the same identity checks (`store.identity`), the same outage guard (`store.outages`).

On SQLite there are two engines over the one file: reads begin as SQLite's deferred transactions, and
writes take SQLite's write lock up front (BEGIN IMMEDIATE). A transaction that reads and then writes
would otherwise get "database is locked" at once, without waiting, whenever another process holds the
lock (SQLite's deadlock avoidance). On any other database both are the same engine.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from prefect_hpo.errors import StoreError
from prefect_hpo.store import migrate, schema
from prefect_hpo.store.identity import (
    STORE_UID_KEY,
    StoreIdentity,
    create_sqlite_file,
    is_read_only,
    make_uid,
    read_uid,
    sqlite_connector,
)
from prefect_hpo.store.outages import OUTAGE_TIMEOUT_S, classify
from prefect_hpo.store.urls import mask_url, refuse_unescaped_at

SQLITE_BUSY_TIMEOUT_MS = 30_000
_SCHEMA_LOCK_KEY = 0x70685F68706F  # an arbitrary constant: PostgreSQL advisory lock for migrations


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


class Database:
    """The engines of one store's database, checked to be the database opened before every write."""

    def __init__(self, url: str, *, outage_timeout: float = OUTAGE_TIMEOUT_S, create: bool = True) -> None:
        """Open the database at `url`, migrating its tables to this prefect_hpo's schema.

        `create`: make a SQLite file that does not exist (a new store). A trial process passes False: the
        sweep created its store, and a missing file means it was deleted or moved (`store.identity`).
        """
        refuse_unescaped_at(url)
        self.url = url
        self.safe_url = mask_url(url)
        self.outage_timeout = outage_timeout
        #: how deep this thread is in store calls: only the outermost waits out an outage (`store.outages`)
        self.calls = threading.local()
        try:
            parsed = make_url(url)
        except Exception:  # noqa: BLE001 - SQLAlchemy raises several types for a bad URL
            raise StoreError(
                f"storage URL {self.safe_url!r} is not a database URL; "
                "use e.g. 'sqlite:///hpo.db' or 'postgresql+psycopg://user@host/db'"
            ) from None
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"future": True}
        path: Path | None = None
        if self.is_sqlite:
            if parsed.database in (None, "", ":memory:"):
                raise StoreError(
                    "storage: an in-memory SQLite database cannot be shared with trial processes; "
                    "give a file, e.g. 'sqlite:///hpo.db'"
                )
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
            if not parsed.query:  # a plain file (a URL with driver options or uri=true is used as it is)
                path = Path(str(parsed.database)).expanduser().absolute()
                if not path.exists():
                    if not create:
                        raise StoreError(
                            f"storage {self.safe_url!r}: the file {path} does not exist (it was deleted or moved "
                            "after the sweep opened it?); put it back and run the same sweep again to continue it"
                        )
                    create_sqlite_file(path, self.safe_url)
                kwargs["creator"] = sqlite_connector(path, SQLITE_BUSY_TIMEOUT_MS / 1000)
        else:
            kwargs["pool_pre_ping"] = True
        try:
            #: the engine reads go through
            self.engine: Engine = create_engine(url, **kwargs)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(
                f"cannot open storage {self.safe_url!r}: {exc}; use e.g. 'sqlite:///hpo.db' "
                "or 'postgresql+psycopg://user@host/db' (with its driver installed)"
            ) from None
        #: the engine writes go through (on SQLite another engine, whose transactions BEGIN IMMEDIATE)
        self.writer = self.engine
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
            self.writer = create_engine(url, **kwargs)
            event.listen(self.writer, "connect", _sqlite_writer_connection)
            event.listen(self.writer, "begin", _begin_immediate)
        self.identity = StoreIdentity(self.safe_url, path)
        self.identity.uid = self._initialise()

    def _initialise(self) -> str | None:
        """Migrate the tables to this prefect_hpo's schema and return the store's uid (given one if it has
        none; None for a store this process may not write); a store already there costs three small queries."""
        try:
            with self.engine.connect() as conn:
                if migrate.current_revision(conn) == migrate.HEAD and (uid := read_uid(conn)) is not None:
                    return uid
            try:
                with self.writer.begin() as conn:
                    if conn.dialect.name == "postgresql":
                        # one migrator at a time; the others then find the store migrated
                        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
                    if migrate.current_revision(conn) != migrate.HEAD:
                        migrate.bring_to_head(conn, where=f"storage {self.safe_url!r}")
                    return make_uid(conn)
            except DBAPIError as exc:
                if is_read_only(exc) and self._revision() == migrate.HEAD:
                    return None  # readable as it is (`prefect-hpo status`); sweep() refuses it (check_writable)
                raise
        except OperationalError as exc:
            raise StoreError(
                f"cannot reach storage {self.safe_url!r}: {exc.orig}; check that the database "
                "server runs and the URL is right"
            ) from None

    def _revision(self) -> str | None:
        with self.engine.connect() as conn:
            return migrate.current_revision(conn)

    def read(self) -> Connection:
        """A connection to read with (use it in a `with` block)."""
        return self.engine.connect()

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction, into the database this store opened and no other (`store.identity`)."""
        self.identity.check_file()
        with self.writer.begin() as conn:
            self.identity.check_uid(conn)
            yield conn

    def check_identity(self) -> None:
        """Before every store call (`outages.guarded`): a stat of the SQLite file, about a microsecond."""
        self.identity.check_file()

    def lost(self, exc: DBAPIError) -> StoreError | None:
        """The StoreError a failed call means when the store went away under it (see `outages.guarded`)."""
        return self.identity.explain(exc)

    def check_writable(self) -> None:
        """Write once, changing nothing; a StoreError naming the file or URL and the fix when this process
        may not write there."""
        try:
            with self.write() as conn:
                conn.execute(
                    update(schema.meta).where(schema.meta.c.key == STORE_UID_KEY).values(value=schema.meta.c.value)
                )
        except DBAPIError as exc:
            if classify(exc, self.is_sqlite) != "other":
                raise  # an outage to wait out, a full disk: `guarded` says so
            raise self.identity.read_only(exc) from None

    def close(self) -> None:
        self.engine.dispose()
        self.writer.dispose()


class StorePart:
    """One group of the store's calls (sweeps, trials, reports, ...), over the store's one database."""

    def __init__(self, database: Database) -> None:
        self.database = database
