"""Bring a store's tables to the schema this prefect_hpo writes, with Alembic's migrations.

The migrations live in `migrations/versions`; their revision is kept in the store's own
`hpo_alembic_version` table (not Alembic's default name, so a database shared with an
application that uses Alembic itself keeps both). A store written before migrations existed
(tables, no version table) is stamped at the first revision, which is the schema it has, and
upgraded from there. A store stamped with a revision this prefect_hpo does not know was
written by a newer one and is refused rather than touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, inspect, text
from sqlalchemy.engine import Connection

from prefect_hpo.errors import StoreError
from prefect_hpo.store.schema import VERSION_TABLE, meta, metadata, sweeps

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported only where a store is migrated: every trial process opens the store, and importing
# Alembic (0.3 s of CPU here) was a third of what a worker process imported before its first trial.

MIGRATIONS = Path(__file__).with_name("migrations")
#: The newest revision; opening a store at it skips Alembic altogether (a trial process opens the
#: store too, so the common case must stay one small query). A test checks it is the scripts' head.
HEAD = "0007"
#: The revision whose schema stores written before migrations existed have.
FIRST = "0001"


def current_revision(conn: Connection) -> str | None:
    """The store's revision, or None for a new store or one written before migrations.

    Read with one query of the version table (the row Alembic keeps: one, as our revisions form one line),
    not through Alembic, which opening a store at its head then never imports."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def bring_to_head(conn: Connection, *, where: str = "storage") -> None:
    """Give the store behind `conn` this prefect_hpo's schema, inside the caller's transaction (and lock, as
    `upgrade` says): a new, empty database gets the tables at once (`create_at_head`), any other is migrated."""
    if current_revision(conn) is None and not inspect(conn).has_table(sweeps.name):
        create_at_head(conn)
    else:
        upgrade(conn, where=where)


def create_at_head(conn: Connection) -> None:
    """Create a new store's tables as they are at HEAD, stamped HEAD, without Alembic.

    Alembic's own recipe for a new database is "create the tables from the metadata, then stamp the head";
    the stamp is one row in the version table, written here as Alembic writes it rather than through
    Alembic, whose import (Mako, Pygments: 0.5 s of CPU here) was the largest part of a new user's first
    sweep start. A test checks that a store made here and one made by running every migration have the same
    tables, columns, keys and indexes, and that Alembic reads this stamp as HEAD.
    """
    metadata.create_all(conn)
    conn.execute(meta.insert().values(key="schema_version", value=str(int(HEAD))))
    version = Table(  # Alembic's layout of its version table (alembic.runtime.migration)
        VERSION_TABLE,
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
    )
    version.create(conn)
    conn.execute(version.insert().values(version_num=HEAD))


def script_head() -> str | None:
    """The head revision of the migration scripts shipped with this prefect_hpo."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config(None)).get_current_head()


def upgrade(conn: Connection, target: str = "head", *, where: str = "storage") -> None:
    """Migrate the store behind `conn` to `target`, inside the caller's transaction.

    The caller holds the store's write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory
    lock), so a second process opening a new store at the same moment waits, then finds it done.
    `where` names the store in errors (a URL with its password masked).
    """
    from alembic import command
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    config = _config(conn)
    current = current_revision(conn)
    if current is not None:
        try:
            ScriptDirectory.from_config(config).get_revision(current)
        except CommandError:
            raise StoreError(
                f"{where} was written by a newer prefect_hpo (schema revision {current!r}, newest known "
                f"here {HEAD!r}); upgrade prefect_hpo to open it"
            ) from None
    elif inspect(conn).has_table(sweeps.name):
        command.stamp(config, FIRST)  # written before migrations: it has the first revision's tables
    command.upgrade(config, target)


def _config(conn: Connection | None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config
