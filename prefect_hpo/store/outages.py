"""What the store does when its database goes away or fills up.

A store whose database was deleted or replaced under it (`store.identity`) is not waited for: the call
ends at once with a StoreError that says so.

A database that cannot be reached for a moment (a PostgreSQL restart or failover, connections
revoked, a network blip) is waited for: the call is run again, with backoff, for up to the store's
`outage_timeout` seconds, and the sweep goes on where it was. A database that is full, or one still
unreachable after that time, ends the call with a `StoreError` that says so and how to go on; each
write is one transaction, so everything committed before stays, and the same sweep run again
continues from it.

Running a call again is safe because a transaction cut off by a lost connection is rolled back by
the server. The one exception is a connection lost after the server committed but before it said so;
a write repeated then fails on the store's unique keys (a trial number, a rung) rather than writing
twice.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Concatenate, Literal, ParamSpec, Protocol, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from prefect_hpo.errors import StoreError

logger = logging.getLogger("prefect_hpo.store")

#: How long a store call waits for an unreachable database before it gives up (seconds).
OUTAGE_TIMEOUT_S = 120.0
_FIRST_PAUSE_S, _LONGEST_PAUSE_S = 0.1, 2.0

Problem = Literal["outage", "full", "other"]


class GuardedDatabase(Protocol):
    """What the guard needs of a store's database (`store.database.Database`)."""

    safe_url: str
    outage_timeout: float
    is_sqlite: bool
    #: per thread: how deep it is in store calls (only the outermost call waits)
    calls: threading.local

    def check_identity(self) -> None:
        """Raise a StoreError when the store opened is gone (its file deleted or replaced); cheap."""
        ...

    def lost(self, exc: DBAPIError) -> StoreError | None:
        """The StoreError a failed call means when the store went away under it (deleted, replaced)."""
        ...


class _Guarded(Protocol):
    """A part of the store: its calls run over one database."""

    @property
    def database(self) -> GuardedDatabase: ...


def classify(exc: DBAPIError, is_sqlite: bool) -> Problem:
    """Whether a database error is an outage worth waiting for, a full disk, or something else."""
    message = str(exc.orig)
    if is_sqlite:  # a local file: nothing to wait for
        return "full" if "database or disk is full" in message else "other"
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    if sqlstate == "53100":  # PostgreSQL's disk_full
        return "full"
    if sqlstate.startswith("28") or sqlstate.startswith("3D"):  # bad credentials, no such database
        return "other"
    if isinstance(exc, OperationalError) or exc.connection_invalidated:
        return "outage"
    return "other"


S = TypeVar("S", bound=_Guarded)
P = ParamSpec("P")
R = TypeVar("R")


def guarded(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Run a store method again while its database is unreachable; turn database failures into StoreError.

    Only the outermost store call in a thread waits (a method calling another is retried whole).
    """

    @functools.wraps(method)
    def call(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        database = self.database
        if getattr(database.calls, "depth", 0):
            return method(self, *args, **kwargs)
        database.check_identity()
        first_failure: float | None = None
        pause = _FIRST_PAUSE_S
        while True:
            database.calls.depth = 1
            try:
                result = method(self, *args, **kwargs)
            except DBAPIError as exc:
                lost = database.lost(exc)
                if lost is not None:
                    raise lost from None
                problem = classify(exc, database.is_sqlite)
                if problem == "full":
                    raise StoreError(
                        f"storage {database.safe_url!r} is full ({exc.orig}); everything committed before is kept: "
                        "free space and run the same sweep again to continue it"
                    ) from None
                if problem == "other":
                    raise
                now = time.monotonic()
                if first_failure is None:
                    first_failure = now
                    logger.warning(
                        "storage %s does not answer (%s); waiting up to %.0f s for it",
                        database.safe_url,
                        str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__,
                        database.outage_timeout,
                    )
                if now - first_failure >= database.outage_timeout:
                    raise StoreError(
                        f"storage {database.safe_url!r} did not answer for {database.outage_timeout:.0f} s "
                        f"({exc.orig}); everything committed before is kept: run the same sweep again to continue "
                        "it once the database is back"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, _LONGEST_PAUSE_S)
            else:
                if first_failure is not None:
                    logger.warning(
                        "storage %s answers again after %.1f s", database.safe_url, time.monotonic() - first_failure
                    )
                return result
            finally:
                database.calls.depth = 0

    return call


C = TypeVar("C", bound=type)


def guard_public_methods(cls: C) -> C:
    """Apply `guarded` to every public method of a store class (not `close`)."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and name != "close" and callable(member):
            setattr(cls, name, guarded(member))
    return cls
