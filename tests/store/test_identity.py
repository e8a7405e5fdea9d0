"""A store writes only into the database it opened: a read-only file is refused up front, and a file
deleted or replaced while a sweep runs (or tables dropped and created again) stops it with a clear word."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from prefect_hpo import Budget, Fixed, Float, sweep
from prefect_hpo.errors import StoreError
from prefect_hpo.records import TrialState
from prefect_hpo.store import SqlTrialStore, schema
from prefect_hpo.trial import Trial

SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0, "log": False}}


def _store_with_a_trial(url: str, name: str = "s") -> tuple[SqlTrialStore, int]:
    store = SqlTrialStore(url)
    sweep_id = store.open_sweep(name, space=SPACE, objectives=[], strategy="tpe", budget={})
    store.create_trial(sweep_id, 0, {"x": 0.5}, "h0")
    return store, sweep_id


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` as a read-only file is to its user: no write permission and, for root (whom permissions do
    not stop), the immutable attribute as well."""
    path.chmod(0o444)
    as_root = os.geteuid() == 0
    if as_root and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        path.chmod(0o644)
        pytest.skip("running as root where `chattr +i` is refused: no way to make a file read-only for root")
    try:
        yield
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o644)


def _remove(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


class TestReadOnly:
    def test_the_write_check_refuses_a_read_only_file_naming_it_and_the_fix(self, tmp_path: Path) -> None:
        db = tmp_path / "hpo.db"
        store, _ = _store_with_a_trial(f"sqlite:///{db}")
        store.close()
        with read_only(db):
            store = SqlTrialStore(f"sqlite:///{db}")
            assert store.sweep_names() == ["s"]  # reading a read-only store is fine (prefect-hpo status)
            with pytest.raises(StoreError) as refused:
                store.check_writable()
            store.close()
        message = str(refused.value)
        assert f"the file {db} is read-only" in message
        assert f"chmod u+w {db}" in message and "another storage" in message
        assert "OperationalError" not in message

    def test_a_read_only_store_from_an_older_release_opens_for_reading(self, tmp_path: Path) -> None:
        """A store written before stores had a uid gets one when first opened; a read-only one cannot, and
        is still read (and refused for writing)."""
        db = tmp_path / "hpo.db"
        store, _ = _store_with_a_trial(f"sqlite:///{db}")
        with store.database.writer.begin() as conn:
            conn.execute(schema.meta.delete().where(schema.meta.c.key == "store_uid"))
        store.close()
        with read_only(db):
            store = SqlTrialStore(f"sqlite:///{db}")
            assert store.sweep_names() == ["s"]
            with pytest.raises(StoreError, match=f"the file {db} is read-only"):
                store.check_writable()
            store.close()
        store = SqlTrialStore(f"sqlite:///{db}")  # writable again: given its uid now
        store.check_writable()
        store.close()

    def test_a_sweep_refuses_a_read_only_store_before_prefect_starts(self, tmp_path: Path) -> None:
        db = tmp_path / "hpo.db"
        _store_with_a_trial(f"sqlite:///{db}")[0].close()
        with read_only(db):
            with pytest.raises(StoreError, match=f"the file {db} is read-only"):
                sweep(_quadratic, {"x": Float(0, 1)}, storage=str(db), validate_only=True)
            with pytest.raises(StoreError, match=f"the file {db} is read-only"):
                sweep(_quadratic, {"x": Float(0, 1)}, storage=str(db), budget=Budget(max_trials=1), workers="threads")


class TestSqliteFileGone:
    def test_a_deleted_file_stops_the_next_write_and_is_not_created_again(self, tmp_path: Path) -> None:
        db = tmp_path / "hpo.db"
        store, sweep_id = _store_with_a_trial(f"sqlite:///{db}")
        _remove(db)
        with pytest.raises(StoreError) as stopped:
            store.create_trial(sweep_id, 1, {"x": 0.1}, "h1")
        message = str(stopped.value)
        assert f"the file {db} was deleted or moved" in message and "run the same sweep again" in message
        with pytest.raises(StoreError, match="was deleted or moved"):
            store.trials(sweep_id)  # a read says so too
        with pytest.raises(StoreError, match=f"the file {db} does not exist"):
            SqlTrialStore(f"sqlite:///{db}", create=False)  # a trial process opening it: no new, empty database
        store.close()
        assert not db.exists()

    def test_a_file_replaced_by_another_store_is_not_written(self, tmp_path: Path) -> None:
        db, other = tmp_path / "hpo.db", tmp_path / "other.db"
        store, sweep_id = _store_with_a_trial(f"sqlite:///{db}")
        _store_with_a_trial(f"sqlite:///{other}", name="other")[0].close()
        _remove(db)
        os.replace(other, db)  # another store put in its place (`mv other.db hpo.db`)
        with pytest.raises(StoreError, match=f"the file {db} was replaced by another database"):
            store.create_trial(sweep_id, 1, {"x": 0.1}, "h1")
        store.close()
        now = SqlTrialStore(f"sqlite:///{db}")
        assert now.sweep_names() == ["other"] and [t.number for t in now.trials(1)] == [0]
        now.close()

    def test_a_trial_process_does_not_create_a_missing_store(self, tmp_path: Path) -> None:
        db = tmp_path / "hpo.db"
        with pytest.raises(StoreError, match=f"the file {db} does not exist"):
            SqlTrialStore(f"sqlite:///{db}", create=False)
        assert not db.exists()


@pytest.mark.postgres
def test_tables_dropped_and_created_again_are_not_written(pg_url: str) -> None:
    store, sweep_id = _store_with_a_trial(pg_url)
    engine = create_engine(pg_url)
    schema.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {schema.VERSION_TABLE}"))
    engine.dispose()
    with pytest.raises(StoreError, match="tables are gone"):
        store.create_trial(sweep_id, 1, {"x": 0.1}, "h1")
    again, _ = _store_with_a_trial(pg_url, name="new")  # another sweep creates the store again
    with pytest.raises(StoreError, match="replaced by another"):
        store.create_trial(sweep_id, 1, {"x": 0.1}, "h1")
    assert [t.number for t in again.trials(again.sweep_id("new"))] == [0]
    store.close()
    again.close()


def _quadratic(config: dict[str, Any]) -> float:
    return (config["x"] - 0.3) ** 2


def deletes_the_store(config: dict[str, Any], trial: Trial) -> float:
    """Trial 2 deletes the store file once it has reported; trial 0 never ends (a blocked training
    function); every other trial reports again after the deletion."""
    trial.report(1, loss=config["x"])
    if trial.number == 0:
        threading.Event().wait()
    if trial.number == 2:
        _remove(Path(config["db"]))
    trial.report(2, loss=config["x"])
    return float(config["x"])


@pytest.mark.prefect
def test_a_store_deleted_mid_sweep_stops_it_with_a_store_error(tmp_path: Path) -> None:
    """4 process slots; the sweep stops with a StoreError that says what happened, without waiting for its
    blocked trial (whose worker is ended), and no empty database appears in the store's place."""
    db = tmp_path / "hpo.db"
    ended: list[BaseException] = []

    def run() -> None:
        try:
            sweep(
                deletes_the_store,
                {"x": Float(0, 1), "db": Fixed(str(db))},
                strategy="random",
                budget=Budget(max_trials=12, max_concurrent=4),
                storage=str(db),
                name="deleted-mid-sweep",
                seed=1,
            )
        except BaseException as exc:  # noqa: BLE001 - what the sweep ended with is what the test checks
            ended.append(exc)

    sweeping = threading.Thread(target=run, daemon=True)
    sweeping.start()
    sweeping.join(timeout=200)
    assert not sweeping.is_alive(), "the sweep waited for its blocked trial after its store was deleted"
    (stopped,) = ended
    assert isinstance(stopped, StoreError), repr(stopped)
    assert f"the file {db} was deleted or moved" in str(stopped), str(stopped)
    assert "no such table" not in str(stopped)
    assert not db.exists()  # no empty database appeared in its place


@pytest.mark.prefect
def test_a_sweep_of_a_store_replaced_mid_sweep_leaves_the_new_file_alone(tmp_path: Path) -> None:
    """The same, with the file replaced by another store: nothing of the sweep is written into it."""
    db, other = tmp_path / "hpo.db", tmp_path / "other.db"
    _store_with_a_trial(f"sqlite:///{other}", name="other")[0].close()
    shutil.copyfile(other, tmp_path / "other-copy.db")
    with pytest.raises(StoreError, match=f"the file {db} was (replaced by another database|deleted or moved)"):
        sweep(
            replaces_the_store,
            {"x": Float(0, 1), "db": Fixed(str(db)), "other": Fixed(str(tmp_path / "other-copy.db"))},
            strategy="random",
            budget=Budget(max_trials=12, max_concurrent=4),
            storage=str(db),
            name="replaced-mid-sweep",
            seed=1,
        )
    now = SqlTrialStore(f"sqlite:///{db}")
    assert now.sweep_names() == ["other"]
    assert [(t.number, t.state) for t in now.trials(1)] == [(0, TrialState.RUNNING)]
    assert now.reports(1) == []
    now.close()


def replaces_the_store(config: dict[str, Any], trial: Trial) -> float:
    """Trial 2 puts another store in place of the sweep's once it has reported."""
    trial.report(1, loss=config["x"])
    if trial.number == 2:
        _remove(Path(config["db"]))
        os.replace(config["other"], config["db"])
    trial.report(2, loss=config["x"])
    return float(config["x"])
