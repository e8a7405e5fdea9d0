"""Storage URLs: the default location, and masking passwords before a URL is shown anywhere."""

from __future__ import annotations

import os
import re
from pathlib import Path

from sqlalchemy.engine import make_url

HOME_ENV = "PREFECT_HPO_HOME"


def default_home() -> Path:
    """Where prefect_hpo keeps its files: $PREFECT_HPO_HOME, else ~/.prefect_hpo."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".prefect_hpo")


def default_storage_url() -> str:
    """The default trial store: a SQLite file in the prefect_hpo home (created on demand)."""
    home = default_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'hpo.db'}"


def resolve_storage(storage: str | None) -> str:
    """A storage argument as a URL: None -> default file; a bare path -> a SQLite file there."""
    if storage is None:
        return default_storage_url()
    if "://" not in storage:
        path = Path(storage).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    try:
        url = make_url(storage)
    except Exception:  # noqa: BLE001 - the store names a bad URL with the fix; nothing to prepare here
        return storage
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)  # as for a bare path
    return storage


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe to log or show."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse still must not leak a password
        return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
