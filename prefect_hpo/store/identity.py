"""Which database a store opened, so that it writes into no other.

A SQLite store is a file, and a file can be deleted, moved or replaced while a sweep runs. SQLite goes on
writing into a deleted file through the connections that still have it open (the trials are lost with
it), and the next connection would create a new, empty database in its place, where the sweep's next
write fails with "no such table" and the trials that end after it have nowhere to go. So:

- a SQLite store's connections open the file with `mode=rw`: none of them creates a file (the store
  creates a missing file once, when it is opened, and a trial process not even then);
- the store records, when it is opened, its uid (a row of `hpo_meta` made with the store, or when an
  older store is first opened) and, for SQLite, the file's device and inode;
- every write checks both first: the file at the path is still the one opened, and the uid its
  transaction reads is the one recorded (PostgreSQL tables dropped and created again have another).
  A mismatch ends the write, before anything is written, with a StoreError that says what happened and
  what to do. A read that fails because the file went away says the same.

Measured cost of the checks (a `stat` per store call, a one-row read per write transaction), min over
blocks of 100 calls on a 2-core machine: a SQLite `add_report` 0.18 -> 0.20 ms, a trial's create and
finish 0.34 -> 0.40 ms, reads unchanged; on PostgreSQL within the noise (about 1 ms a write).
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from prefect_hpo.errors import StoreError
from prefect_hpo.store import schema

#: The `hpo_meta` key under which a store keeps its uid.
STORE_UID_KEY = "store_uid"
_SELECT_UID_SQL = f"SELECT value FROM {schema.meta.name} WHERE key = '{STORE_UID_KEY}'"
# SQLite's "no such table", PostgreSQL's undefined_table; PostgreSQL's invalid_catalog_name (no such database)
_TABLE_MISSING = ("no such table", "42P01")
_DATABASE_MISSING = ("3D000",)
# SQLite's SQLITE_READONLY ("attempt to write a readonly database"); PostgreSQL's insufficient_privilege
# and read_only_sql_transaction (a standby)
_READ_ONLY = ("readonly", "42501", "25006")

FileId = tuple[int, int]


def file_id(path: Path) -> FileId | None:
    """The (device, inode) of the file at `path`, or None when there is none."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def sqlite_connector(path: Path, timeout: float) -> Callable[[], sqlite3.Connection]:
    """A connection factory for the SQLite file `path` that never creates it (`mode=rw`): a file deleted
    while the store is open stays missing, instead of coming back empty."""
    uri = f"file:{quote(str(path))}?mode=rw"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)

    return connect


def create_sqlite_file(path: Path, shown: str) -> None:
    """Create the (empty) SQLite file of a new store."""
    try:
        sqlite3.connect(path).close()
    except sqlite3.Error as exc:
        raise StoreError(
            f"storage {shown!r}: cannot create the file {path} ({exc}); check that its folder exists and this "
            "user may write there"
        ) from None


def read_uid(conn: Connection) -> str | None:
    """The store's uid, or None for a store that has none yet."""
    # the driver's own statement, read before every write: on SQLite a write then cost 24 us more than
    # without the check, against 40 us with a SQLAlchemy select (figures: the docstring above)
    value = conn.exec_driver_sql(_SELECT_UID_SQL).scalar()
    return None if value is None else str(value)


def make_uid(conn: Connection) -> str:
    """The store's uid, given one now if it has none (the caller holds the store's write lock)."""
    uid = read_uid(conn)
    if uid is None:
        uid = uuid.uuid4().hex
        conn.execute(insert(schema.meta).values(key=STORE_UID_KEY, value=uid))
    return uid


def is_read_only(exc: DBAPIError) -> bool:
    """Whether a database error says this process may not write there."""
    return _names(exc, _READ_ONLY)


def _names(exc: DBAPIError, signs: tuple[str, ...]) -> bool:
    said = f"{exc.orig} {getattr(exc.orig, 'sqlstate', '') or ''}"
    return any(sign in said for sign in signs)


class StoreIdentity:
    """The database a store opened: its uid and, for a SQLite store, its file; checked before each write."""

    def __init__(self, shown: str, path: Path | None) -> None:
        """`shown`: the store's URL with its password masked; `path`: its SQLite file (None for a server)."""
        self.shown = shown
        self.path = path
        self.file = file_id(path) if path is not None else None
        self.uid: str | None = None

    def check_file(self) -> None:
        """Refuse when the SQLite file at the path is gone or is another file than the one opened."""
        if self.path is None:
            return
        now = file_id(self.path)
        if now is None:
            raise self.lost(f"the file {self.path} was deleted or moved")
        if now != self.file:
            raise self.lost(f"the file {self.path} was replaced by another database")

    def check_uid(self, conn: Connection) -> None:
        """Refuse when the database behind `conn` is not the store opened (inside the write's transaction)."""
        if self.uid is None:  # a read-only store that could not be given one: it takes no writes anyway
            return
        try:
            uid = read_uid(conn)
        except DBAPIError as exc:
            gone = self.explain(exc)
            if gone is not None:
                raise gone from None
            raise
        if uid != self.uid:
            where = f"the file {self.path}" if self.path is not None else "it"
            raise self.lost(f"{where} was replaced by another database (its tables were made again)")

    def explain(self, exc: DBAPIError) -> StoreError | None:
        """The StoreError a database error means when the store went away under it, else None."""
        try:
            self.check_file()
        except StoreError as lost:
            return lost
        if _names(exc, _TABLE_MISSING):
            return self.lost(f"its tables are gone ({str(exc.orig).strip()})")
        if _names(exc, _DATABASE_MISSING):  # it was there when the store opened: dropped since
            return self.lost(f"its database is gone ({str(exc.orig).strip()})")
        return None

    def lost(self, what: str) -> StoreError:
        """What to say when the store opened is no longer there: nothing more is written, and the fix."""
        back = "put the file back (or restore it from a backup)" if self.path is not None else "restore it"
        return StoreError(
            f"storage {self.shown!r}: {what} while this sweep had it open; nothing more is written there (a "
            f"database in its place is not the sweep's). {back.capitalize()} and run the same sweep again to "
            "continue it, or give the sweep another storage to start afresh"
        )

    def read_only(self, exc: DBAPIError) -> StoreError:
        """What to say when the store cannot be written (the early check of `sweep()`)."""
        if self.path is not None:
            return StoreError(
                f"storage {self.shown!r}: the file {self.path} is read-only for this process ({exc.orig}); a "
                f"sweep writes every trial to it: make it writable (chmod u+w {self.path}; SQLite also writes "
                f"{self.path.name}-wal and {self.path.name}-shm beside it, so its folder must be writable too), "
                "or give the sweep another storage"
            )
        return StoreError(
            f"storage {self.shown!r} cannot be written ({str(exc.orig).strip()}); a sweep writes every trial to "
            "it: use a role that may INSERT, UPDATE and DELETE in the hpo_ tables (and a primary server, not a "
            "read-only standby), or give the sweep another storage"
        )
