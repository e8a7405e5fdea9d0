"""Alembic's environment for the trial store's migrations.

prefect_hpo runs these itself when a store is opened (`prefect_hpo.store.migrate`), on a
connection it passes in `config.attributes["connection"]`, inside a transaction it holds.
A developer adding a migration runs Alembic's own command line with `-x url=<store URL>`:

    alembic -c prefect_hpo/store/migrations/alembic.ini -x url=sqlite:///hpo.db revision -m "..."
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from prefect_hpo.store.schema import VERSION_TABLE, metadata

config = context.config
connection = config.attributes.get("connection")


def _run(conn: object) -> None:
    context.configure(
        connection=conn,  # type: ignore[arg-type]
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite alters a table by copying it; batch mode writes that for us
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("give the store to migrate: alembic ... -x url=sqlite:///hpo.db")
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
