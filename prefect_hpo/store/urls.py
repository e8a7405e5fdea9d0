"""Storage URLs: the default location, and masking credentials before a URL is shown anywhere."""

from __future__ import annotations

import os
import re
from pathlib import Path

from sqlalchemy.engine import make_url

from prefect_hpo.errors import StoreError

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
    """A storage argument as a URL: None -> default file; a bare path -> a SQLite file there.

    A SQLite file's folder must exist, except the prefect_hpo home, which is created: a folder with
    a typo in its name would otherwise be created silently, and the sweep would start afresh there."""
    if storage is None:
        return default_storage_url()
    refuse_unescaped_at(storage)
    if "://" not in storage:
        path = Path(storage).expanduser()
        _check_folder(path, storage)
        return f"sqlite:///{path}"
    path_in_url = sqlite_file(storage)
    if path_in_url is not None:
        _check_folder(path_in_url, mask_url(storage))
    return storage


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases, in-memory SQLite, or a URL that does not parse)."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - the store names a bad URL with the fix; nothing to find here
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


def _check_folder(path: Path, given: str) -> None:
    """Create the prefect_hpo home for a file in it; refuse a file in any other folder that does not exist."""
    folder = path.parent
    if folder.is_dir():
        return
    if folder.absolute() == default_home().absolute():
        folder.mkdir(parents=True, exist_ok=True)
        return
    raise StoreError(
        f"storage {given!r}: the folder {str(folder)!r} does not exist; check the path for a typo, "
        f"or create the folder (mkdir -p {folder}) to start a new store there"
    )


#: Query parameters that carry a credential: SQLAlchemy hands the query to the driver, so
#: `postgresql+psycopg://user@host/db?password=...` logs in as well as `user:password@host`.
SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "sslpassword", "secret", "token", "access_token"})

# `user:password@` as SQLAlchemy reads it: the user name up to the first ':' (no '/'), the password up to
# the first '@' after it ('/', '?', '#' and ':' included)
_USERINFO_PASSWORD = re.compile(r"://([^:/]*):[^@]*@")
_QUERY_SECRET = re.compile(r"([?&](?:" + "|".join(sorted(SECRET_QUERY_KEYS)) + r")=)[^&#]*", re.IGNORECASE)
# a URL with a password (`scheme://user:`), and what follows the user name
_WITH_PASSWORD = re.compile(r"(?P<start>[\w+]+://(?P<user>[^:/]*)):(?P<rest>.*)", re.DOTALL)


def _unescaped_at(url: str) -> re.Match[str] | None:
    """The match of a URL whose password holds an '@' that is not written %40, if it is one.

    SQLAlchemy ends the password at its first '@' and reads the rest as the host, so
    `postgresql://postgres:S3cret@PW@127.0.0.1/test` connects to host "PW@127.0.0.1" and shows "PW" in
    every message. The sign: more than one '@' after `user:` (an '@' in the user name alone, as in
    Azure's `user@server:password@host`, comes before it and reads as meant)."""
    match = _WITH_PASSWORD.fullmatch(url)
    return match if match is not None and match["rest"].count("@") > 1 else None


def _masked_up_to_the_last_at(match: re.Match[str]) -> str:
    """`scheme://user:***@` and what follows the last '@': no piece of a password with '@' in it shows."""
    return f"{match['start']}:***@{match['rest'].rsplit('@', 1)[1]}"


def refuse_unescaped_at(url: str) -> None:
    """Refuse a URL whose password holds an unescaped '@' (see `_unescaped_at`), without showing the password.

    Raises:
        StoreError: naming the URL with its password masked, and the fix (URL-encode the password).
    """
    match = _unescaped_at(url)
    if match is not None:
        raise StoreError(
            f"storage {_masked_up_to_the_last_at(match)!r}: the URL has more than one '@' after the user name, so "
            "its password holds an '@' that would be read as the end of the password and part of the host; "
            "URL-encode the password with urllib.parse.quote(password, safe='') (an '@' becomes %40, '/' %2F, "
            "'#' %23, '?' %3F) and put that in the URL"
        )


def mask_url(url: str) -> str:
    """The URL with its password, and any credential in its query, replaced by ***: safe to log or show."""
    ambiguous = _unescaped_at(url)
    if ambiguous is not None:
        return _QUERY_SECRET.sub(r"\1***", _masked_up_to_the_last_at(ambiguous))
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse still must not leak a password
        return _QUERY_SECRET.sub(r"\1***", _USERINFO_PASSWORD.sub(r"://\1:***@", url))
    query = {k: ("***" if k.lower() in SECRET_QUERY_KEYS else v) for k, v in parsed.query.items()}
    # the query is rendered URL-quoted: show the mask as the *** it is
    return parsed.set(query=query).render_as_string(hide_password=True).replace("=%2A%2A%2A", "=***")


def has_credentials(url: str) -> bool:
    """Whether the URL carries a password (after `user:`, or as a query parameter such as `password=`)."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - judged by the text, as mask_url masks it
        return bool(_USERINFO_PASSWORD.search(url) or _QUERY_SECRET.search(url))
    return bool(parsed.password) or any(k.lower() in SECRET_QUERY_KEYS for k in parsed.query)
