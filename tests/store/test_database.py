"""The store's database: bad URLs refused clearly, SQLite in WAL mode, many processes opening one store, the
store's parts over one database."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from prefect_hpo.errors import StoreError
from prefect_hpo.store import SqlTrialStore, mask_url
from prefect_hpo.store.database import Database
from prefect_hpo.store.reports import Reports
from prefect_hpo.store.sweeps import Sweeps
from prefect_hpo.store.trials import Trials
from prefect_hpo.store.urls import resolve_storage
from tests.store.helpers import open_sweep


def test_unreachable_database_fails_fast_without_the_password() -> None:
    url = "postgresql+psycopg://hpo:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(StoreError) as info:
        SqlTrialStore(url)
    assert "cannot reach storage" in str(info.value)
    assert "s3cret" not in str(info.value) and "***" in str(info.value)


def test_bad_urls_and_masking(tmp_path: Any) -> None:
    with pytest.raises(StoreError, match=r"cannot open storage 'nonsense://'.*sqlite:///hpo.db"):
        SqlTrialStore("nonsense://")
    with pytest.raises(StoreError, match="not a database URL"):
        SqlTrialStore("::not a url::")
    with pytest.raises(StoreError, match="in-memory SQLite"):
        SqlTrialStore("sqlite://")
    assert mask_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert resolve_storage(str(tmp_path / "b.db")) == f"sqlite:///{tmp_path / 'b.db'}"


def test_sqlite_uses_wal(sqlite_url: str) -> None:
    from sqlalchemy import text

    store = SqlTrialStore(sqlite_url)
    with store.database.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    store.close()


def _open_and_close(url: str) -> None:
    SqlTrialStore(url).close()


def test_processes_opening_a_new_store_at_once_all_succeed(storage_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_open_and_close, args=(storage_url,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert SqlTrialStore(storage_url).sweep_names() == []


def test_the_parts_of_the_store_work_on_their_own_over_one_database(storage_url: str) -> None:
    """Each part (sweeps, trials, reports) on its own over one Database writes what the whole store reads."""
    database = Database(storage_url)
    sweeps, trials, reports = Sweeps(database), Trials(database), Reports(database)
    sweep_id = open_sweep(sweeps)
    trial = trials.create_trial(sweep_id, 0, {"x": 0.5}, "h0")
    assert reports.add_report(trial.id, 1, {"loss": 0.5}) is None
    trials.request_stop(trial.id, "enough")
    assert reports.add_report(trial.id, 2, {"loss": 0.4}) == "enough"  # another part's write, seen
    database.close()
    store = SqlTrialStore(storage_url)
    assert store.trial(sweep_id, 0).last_step == 2 and [r.step for r in store.reports(sweep_id)] == [1, 2]
    store.close()


def test_a_part_on_its_own_is_guarded_as_the_store_is(sqlite_url: str, tmp_path: Path) -> None:
    """A part's calls check first that the store's file is still the one opened (`store.outages.guarded`)."""
    database = Database(sqlite_url)
    trials = Trials(database)
    assert trials.next_number(open_sweep(Sweeps(database))) == 0
    (tmp_path / "hpo.db").unlink()
    with pytest.raises(StoreError, match="was deleted or moved while this sweep had it open"):
        trials.next_number(1)
    database.close()
