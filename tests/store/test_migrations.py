"""Alembic migrations of the trial store: new stores, stores from older releases, stores from newer ones."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event, inspect, text

from prefect_hpo.checkpoint_layout import CheckpointLayout
from prefect_hpo.errors import StoreError
from prefect_hpo.lease import new_owner, owner_alive
from prefect_hpo.records import TrialState
from prefect_hpo.store import SqlTrialStore, migrate, schema


def _sweep_row(name: str, uid: str) -> dict[str, Any]:
    """A sweep's row with the columns every revision has."""
    return {
        "name": name,
        "uid": uid,
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0, "log": False}},
        "objectives": [{"metric": "loss", "mode": "min"}],
        "strategy": "random",
        "budget": {"max_trials": 3},
        "fingerprint": "f",
        "status": "finished",
        "created_at": time.time(),
    }


def _old_store(url: str, revision: str, *, version_table: bool = True) -> None:
    """A store as an older prefect_hpo left it: tables at `revision`, one sweep with a finished trial."""
    engine = create_engine(url)
    with engine.begin() as conn:
        migrate.upgrade(conn, revision)
        now = time.time()
        conn.execute(schema.sweeps.insert().values(id=1, **_sweep_row("old", "u" * 32)))
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
    assert version == str(
        int(migrate.HEAD)
    )  # what a release from before migrations checks, and refuses as newer than its own
    assert _revision(storage_url) == migrate.HEAD


def _tables(url: str) -> dict[str, Any]:
    """Everything about a store's tables a migration could depend on, as the database reports it."""
    engine = create_engine(url)
    found = inspect(engine)
    tables = {
        name: {
            "columns": {c["name"]: (str(c["type"]), c["nullable"]) for c in found.get_columns(name)},
            "primary key": found.get_pk_constraint(name)["constrained_columns"],
            "unique": sorted(tuple(u["column_names"]) for u in found.get_unique_constraints(name)),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in found.get_indexes(name)
            ),
            "foreign keys": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in found.get_foreign_keys(name)
            ),
        }
        for name in found.get_table_names()
    }
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT key, value FROM hpo_meta ORDER BY key")).all()
        stamped = MigrationContext.configure(conn, opts={"version_table": schema.VERSION_TABLE}).get_current_revision()
    engine.dispose()
    return {"tables": tables, "meta": rows, "stamped": stamped}


def _drop_everything(url: str) -> None:
    engine = create_engine(url)
    schema.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {schema.VERSION_TABLE}"))
    engine.dispose()


def test_a_new_store_is_created_as_every_migration_would_leave_it(storage_url: str) -> None:
    """A new store's tables are made from the metadata and stamped (no Alembic import); that store must be
    the one the migrations build, or a later migration would meet a table it does not expect."""
    engine = create_engine(storage_url)
    with engine.begin() as conn:
        migrate.upgrade(conn)  # every migration, from an empty database
    engine.dispose()
    migrated = _tables(storage_url)
    _drop_everything(storage_url)
    SqlTrialStore(storage_url).close()  # a new store, as sweep() opens one
    created = _tables(storage_url)
    assert created["stamped"] == migrate.HEAD  # Alembic reads the stamp as the head
    assert created["tables"] == migrated["tables"]
    assert [tuple(r) for r in created["meta"] if r[0] == "schema_version"] == [
        ("schema_version", str(int(migrate.HEAD)))
    ]
    engine = create_engine(storage_url)
    with engine.begin() as conn:  # and Alembic can take it from there: down one revision, and up again
        command.downgrade(migrate._config(conn), "0005")
        assert migrate.current_revision(conn) == "0005"
        migrate.upgrade(conn)
    engine.dispose()
    assert _tables(storage_url)["tables"] == migrated["tables"]


def test_opening_a_new_store_does_not_import_alembic(tmp_path: Path) -> None:
    """What the fast path is for: a new user's first sweep does not pay for Alembic's import."""
    code = (
        "import sys\n"
        "from prefect_hpo.store import SqlTrialStore\n"
        f"SqlTrialStore('sqlite:///{tmp_path / 'new.db'}').close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("revision", "version_table"),
    [
        ("0001", True),  # written at the first revision
        ("0001", False),  # the first release, from before migrations
        ("0002", False),  # a release from before migrations that had added the newer columns on open
        ("0002", True),  # written before trials had a lineage
        ("0003", True),  # written before each sweep had a checkpoint folder of its own
        ("0004", True),  # written before trials counted their failed attempts
        ("0005", True),  # written before trials recorded their devices and thread count
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


def test_an_older_store_keeps_the_old_checkpoint_folder_for_the_trials_it_had(storage_url: str) -> None:
    _old_store(storage_url, "0003")  # sweep "old" with trial 0
    engine = create_engine(storage_url)
    with engine.begin() as conn:
        conn.execute(schema.sweeps.insert().values(id=2, **_sweep_row("never ran", "v" * 32)))
    engine.dispose()
    store = SqlTrialStore(storage_url)
    old, idle = store.sweep(store.sweep_id("old")), store.sweep(store.sweep_id("never ran"))
    store.close()
    columns = ("checkpoint_folder", "legacy_checkpoint_folder", "legacy_checkpoint_trials")
    assert [old[c] for c in columns] == [f"old-{'u' * 32}", "old", 1]
    assert [idle[c] for c in columns] == [f"never-ran-{'v' * 32}", None, None]  # no trial wrote anywhere
    layout = CheckpointLayout.of_sweep("s3://bucket/ckpt/", old)
    assert layout.path(0) == "s3://bucket/ckpt/old/trial-0"  # the trial it had: the old folder
    assert layout.path(1) == f"s3://bucket/ckpt/old-{'u' * 32}/trial-1"  # a new one: its own
    assert (layout.is_legacy(0), layout.is_legacy(1)) == (True, False)


def test_a_downgrade_to_0003_keeps_every_sweep_and_trial(storage_url: str) -> None:
    _old_store(storage_url, "0003")
    SqlTrialStore(storage_url).close()  # upgraded to the head
    engine = create_engine(storage_url)
    if engine.dialect.name == "sqlite":  # as the store's own connections: foreign keys enforced
        event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA foreign_keys=ON"))
    with engine.begin() as conn:
        config = migrate._config(conn)
        command.downgrade(config, "0003")
    with engine.connect() as conn:
        columns = [c["name"] for c in inspect(conn).get_columns("hpo_sweeps")]
        counts = [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in ("hpo_sweeps", "hpo_trials")]
    engine.dispose()
    assert not [c for c in columns if "checkpoint" in c]
    assert counts == [1, 1]  # a batch drop copied hpo_sweeps on SQLite, and the copy's drop cascaded to trials


def _trials_at_0004(url: str) -> None:
    """A 0004 store with trials as the release before 0005 left them, and a report for each."""
    _old_store(url, "0004")  # trial 0: COMPLETE, attempt 1
    rows = [(1, "COMPLETE", 3), (2, "FAIL_RECOVERABLE", 2), (3, "RUNNING", 2), (4, "FAIL", 3)]
    engine = create_engine(url)
    with engine.begin() as conn:
        for number, state, attempt in rows:
            conn.execute(
                schema.trials.insert().values(
                    sweep_id=1,
                    number=number,
                    attempt=attempt,
                    state=state,
                    config={"x": number / 10},
                    config_hash=f"h{number}",
                    created_at=time.time(),
                    bracket=0,
                )
            )
        for trial_id in conn.execute(text("SELECT id FROM hpo_trials")).scalars().all():
            conn.execute(
                schema.reports.insert().values(trial_id=trial_id, sweep_id=1, step=1, metrics={}, created_at=0.0)
            )
    engine.dispose()


def test_trials_of_an_older_store_keep_the_failures_counted_against_max_retries(storage_url: str) -> None:
    _trials_at_0004(storage_url)
    store = SqlTrialStore(storage_url)
    trials = store.trials(store.sweep_id("old"))
    store.close()
    # every earlier attempt, as the release before counted them, and the last one where it failed
    assert [(t.number, t.attempt, t.failures) for t in trials] == [
        (0, 1, 0),
        (1, 3, 2),
        (2, 2, 2),
        (3, 2, 1),
        (4, 3, 2),
    ]


def test_a_downgrade_to_0004_keeps_every_trial_and_report(storage_url: str) -> None:
    _trials_at_0004(storage_url)
    SqlTrialStore(storage_url).close()  # upgraded to the head
    engine = create_engine(storage_url)
    if engine.dialect.name == "sqlite":  # as the store's own connections: foreign keys enforced
        event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA foreign_keys=ON"))
    with engine.begin() as conn:
        command.downgrade(migrate._config(conn), "0004")
    with engine.connect() as conn:
        columns = [c["name"] for c in inspect(conn).get_columns("hpo_trials")]
        counts = [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in ("hpo_trials", "hpo_reports")]
    engine.dispose()
    assert "failures" not in columns
    assert counts == [5, 5]


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
