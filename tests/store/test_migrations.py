"""Alembic migrations of the trial store: new stores, stores from older releases, stores from newer ones."""

from __future__ import annotations

import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from prefect_hpo.errors import StoreError
from prefect_hpo.lease import new_owner, owner_alive
from prefect_hpo.records import TrialState
from prefect_hpo.store import SqlTrialStore, migrate, schema


def _old_store(url: str, revision: str, *, version_table: bool = True) -> None:
    """A store as an older prefect_hpo left it: tables at `revision`, one sweep with a finished trial."""
    engine = create_engine(url)
    with engine.begin() as conn:
        migrate.upgrade(conn, revision)
        now = time.time()
        conn.execute(
            schema.sweeps.insert().values(
                id=1,
                name="old",
                uid="u" * 32,
                space={"x": {"type": "float", "low": 0.0, "high": 1.0, "log": False}},
                objectives=[{"metric": "loss", "mode": "min"}],
                strategy="random",
                budget={"max_trials": 3},
                fingerprint="f",
                status="finished",
                created_at=now,
            )
        )
        conn.execute(
            schema.trials.insert().values(
                sweep_id=1,
                number=0,
                attempt=1,
                state="COMPLETE",
                config={"x": 0.25},
                config_hash="h",
                values=[0.5],
                value=0.5,
                created_at=now,
                bracket=0,
            )
        )
        if not version_table:
            conn.execute(text(f"DROP TABLE {schema.VERSION_TABLE}"))
    engine.dispose()


def _revision(url: str) -> str | None:
    engine = create_engine(url)
    with engine.connect() as conn:
        revision = migrate.current_revision(conn)
    engine.dispose()
    return revision


def test_head_is_the_newest_migration() -> None:
    assert migrate.script_head() == migrate.HEAD


def test_migrated_tables_are_the_tables_the_code_uses(storage_url: str) -> None:
    SqlTrialStore(storage_url).close()
    engine = create_engine(storage_url)
    with engine.connect() as conn:
        differences = compare_metadata(
            MigrationContext.configure(conn, opts={"version_table": schema.VERSION_TABLE}), schema.metadata
        )
        version = conn.execute(text("SELECT value FROM hpo_meta WHERE key = 'schema_version'")).scalar()
    engine.dispose()
    assert differences == []
    assert version == "3"  # what a release from before migrations checks, and refuses as newer than its own
    assert _revision(storage_url) == migrate.HEAD


@pytest.mark.parametrize(
    ("revision", "version_table"),
    [
        ("0001", True),  # written at the first revision
        ("0001", False),  # the first release, from before migrations
        ("0002", False),  # a release from before migrations that had added the newer columns on open
        ("0002", True),  # written before trials had a lineage
    ],
)
def test_an_older_store_opens_upgraded_with_its_rows(storage_url: str, revision: str, version_table: bool) -> None:
    _old_store(storage_url, revision, version_table=version_table)
    store = SqlTrialStore(storage_url)
    assert _revision(storage_url) == migrate.HEAD
    sid = store.sweep_id("old")
    [trial] = store.trials(sid)
    assert (trial.state, trial.config, trial.value, trial.lineage) == (TrialState.COMPLETE, {"x": 0.25}, 0.5, None)
    mine = new_owner()
    assert store.claim_sweep(sid, mine, 30.0, owner_alive) == (None, None)  # the owner columns work
    assert store.sweep(sid)["owner"] == mine
    store.close()
    engine = create_engine(storage_url)
    columns = [c["name"] for c in inspect(engine).get_columns("hpo_sweeps")]
    engine.dispose()
    assert [c for c in columns if c in ("spec", "owner", "owner_beat")] == ["spec", "owner", "owner_beat"]


def test_a_store_from_a_newer_release_is_refused_and_left_alone(storage_url: str) -> None:
    _old_store(storage_url, "head")
    engine = create_engine(storage_url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {schema.VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(StoreError, match=r"newer prefect_hpo \(schema revision '9999'.*upgrade prefect_hpo"):
        SqlTrialStore(storage_url)
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT version_num FROM {schema.VERSION_TABLE}")).scalar() == "9999"
        assert conn.execute(text("SELECT count(*) FROM hpo_trials")).scalar() == 1
    engine.dispose()
