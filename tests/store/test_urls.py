"""Storage arguments: the default location, a SQLite file in a folder that does not exist, and passwords
with characters a URL reserves."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from prefect_hpo import Budget, Float, sweep
from prefect_hpo.errors import StoreError
from prefect_hpo.store import SqlTrialStore
from prefect_hpo.store.urls import has_credentials, mask_url, resolve_storage, sqlite_file


@pytest.mark.parametrize("form", ["path", "url"])
def test_a_file_in_a_missing_folder_is_refused_not_created(tmp_path: Path, form: str) -> None:
    typo = tmp_path / "expriments" / "hpo.db"
    with pytest.raises(StoreError) as info:
        resolve_storage(str(typo) if form == "path" else f"sqlite:///{typo}")
    message = str(info.value)
    assert f"the folder '{typo.parent}' does not exist" in message
    assert "check the path" in message and f"mkdir -p {typo.parent}" in message
    assert not typo.parent.exists()


def test_the_default_home_is_created_by_name_or_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "new-home"
    monkeypatch.setenv("PREFECT_HPO_HOME", str(home))
    assert resolve_storage(str(home / "hpo.db")) == f"sqlite:///{home / 'hpo.db'}"  # named explicitly, still home
    assert home.is_dir()
    home.rmdir()
    assert resolve_storage(None) == f"sqlite:///{home / 'hpo.db'}"
    assert home.is_dir()


def test_sqlite_file_names_the_file_of_sqlite_urls_only() -> None:
    assert sqlite_file("sqlite:////data/hpo.db") == Path("/data/hpo.db")
    assert sqlite_file("sqlite://") is None and sqlite_file("sqlite:///:memory:") is None
    assert sqlite_file("postgresql+psycopg://u:pw@h/db") is None and sqlite_file("::nonsense::") is None


def test_a_sweep_into_a_missing_folder_stops_before_it_starts(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        sweep(
            lambda c: c["x"], {"x": Float(0.0, 1.0)}, budget=Budget(max_trials=1), storage=str(tmp_path / "a" / "b.db")
        )
    assert not (tmp_path / "a").exists()


#: URLs whose password holds an unescaped '@' (with '/', ':' or '?' beside it): SQLAlchemy reads the
#: password up to the first '@' and takes the rest for the host, so a part of the password would show.
UNESCAPED_AT = [
    ("postgresql+psycopg://postgres:S3cret@PW@127.0.0.1/test", ("S3cret", "PW")),
    ("postgresql+psycopg://postgres:S3c@r:et@127.0.0.1:5432/test", ("S3c", "r:et")),
    ("postgresql+psycopg://postgres:a/b@c?d@127.0.0.1/test", ("a/b", "c?d")),
    ("postgresql+psycopg://me@server:pXa@sYs@db.example/test?sslmode=require", ("pXa", "sYs")),
]


@pytest.mark.parametrize(("url", "pieces"), UNESCAPED_AT)
def test_an_unescaped_at_in_a_password_is_refused_without_showing_it(url: str, pieces: tuple[str, ...]) -> None:
    for refuse in (resolve_storage, SqlTrialStore):
        with pytest.raises(StoreError) as refused:
            refuse(url)
        message = str(refused.value)
        assert "URL-encode the password" in message and "urllib.parse.quote(password, safe='')" in message
        assert "%40" in message
        assert not any(piece in message for piece in pieces), message
    with pytest.raises(StoreError) as refused:
        sweep(lambda c: c["x"], {"x": Float(0.0, 1.0)}, storage=url, validate_only=True)
    assert "URL-encode the password" in str(refused.value)
    assert not any(piece in str(refused.value) for piece in pieces)
    assert not any(piece in mask_url(url) for piece in pieces), mask_url(url)
    assert has_credentials(url)


def test_an_at_in_the_user_name_alone_is_read_as_sqlalchemy_reads_it() -> None:
    """Azure's `user@server` user names: one '@' after the password, so nothing is ambiguous."""
    url = "postgresql+psycopg://me@server:pw@db.example/test"
    assert resolve_storage(url) == url
    assert mask_url(url) == "postgresql+psycopg://me%40server:***@db.example/test"


@pytest.mark.postgres
def test_the_url_encoded_password_the_message_asks_for_logs_in(tmp_path: Path) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from tests.conftest import PG_ADMIN_URL, pg_admin

    tag = uuid.uuid4().hex[:10]
    role, password = f"hpo_at_{tag}", f"S3cret@PW/{tag}#?"
    engine = pg_admin(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{role}" AUTHORIZATION "{role}"'))
    admin = make_url(PG_ADMIN_URL)
    where = f"{admin.host}:{admin.port}/{admin.database}"
    try:
        with pytest.raises(StoreError, match="URL-encode the password"):
            SqlTrialStore(f"postgresql+psycopg://{role}:{password}@{where}")
        store = SqlTrialStore(f"postgresql+psycopg://{role}:{quote(password, safe='')}@{where}")
        store.check_writable()
        store.close()
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{role}" CASCADE'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        engine.dispose()
