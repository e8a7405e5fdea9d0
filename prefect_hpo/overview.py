"""The sweeps in a store, one row each: what `prefect-hpo ls` lists, and where a mistyped name is matched."""

from __future__ import annotations

import difflib
import logging
from collections import Counter
from datetime import UTC, datetime

import pandas as pd

from prefect_hpo.errors import StoreError
from prefect_hpo.result import result_from_store
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.store.urls import default_home, sqlite_file


def close_names(name: str, known: list[str], n: int = 3) -> list[str]:
    """The known sweep names closest to `name` (difflib's ratio of at least 0.6), closest first."""
    return difflib.get_close_matches(name, known, n=n)


def did_you_mean(name: str, known: list[str]) -> str:
    """'did you mean 'a' or 'b'?' for the close matches of `name`, or '' when none is close."""
    matches = close_names(name, known)
    if not matches:
        return ""
    return "did you mean " + " or ".join(repr(m) for m in matches) + "?"


def find_sweep(store: SqlTrialStore, name: str, listing: str) -> int:
    """The id of sweep `name`; for an unknown name a StoreError with the close matches and `listing`,
    the command that lists the store's sweeps (each caller names its own: a CLI command, a Python call)."""
    known = store.sweep_names()
    if name not in known:
        hint = did_you_mean(name, known)
        held = f"it holds {len(known)} sweep{'s' if len(known) != 1 else ''}" if known else "it holds no sweep yet"
        raise StoreError(
            f"no sweep named {name!r} in {store.safe_url!r} ({held}); "
            + (f"{hint} " if hint else "")
            + f"list them with {listing}"
        )
    return store.sweep_id(name)


def list_sweeps(store: SqlTrialStore) -> pd.DataFrame:
    """One row per sweep, oldest first: name, status, trials (all, then a column per state that occurs),
    best (the first objective's best value), objective ('metric:mode'), updated (the last start or end
    of the sweep or of one of its trials, UTC)."""
    rows = []
    states: list[str] = []
    for name in store.sweep_names():
        sweep_id = store.sweep_id(name)
        row = store.sweep(sweep_id)
        result = result_from_store(store, sweep_id)
        counts = Counter(r.state.value for r in result.records)
        states += [s for s in counts if s not in states]
        stamps = [row[k] for k in ("created_at", "started_at", "finished_at") if row[k] is not None]
        for record in result.records:
            stamps += [t.timestamp() for t in (record.started_at, record.finished_at) if t is not None]
        objective = result.objectives[0]
        rows.append(
            {
                "name": name,
                "status": row["status"],
                "trials": len(result.records),
                **counts,
                "best": result.best_value,
                "objective": f"{objective.metric}:{objective.mode}",
                "updated": datetime.fromtimestamp(max(stamps), tz=UTC),
            }
        )
    columns = ["name", "status", "trials", *sorted(states), "best", "objective", "updated"]
    frame = pd.DataFrame(rows, columns=columns)
    for state in states:
        frame[state] = frame[state].fillna(0).astype(int)
    frame["trials"] = frame["trials"].astype(int)
    frame["best"] = frame["best"].astype(float)
    frame["updated"] = pd.to_datetime(frame["updated"], utc=True)
    return frame


def store_line(store: SqlTrialStore, sweep_id: int) -> tuple[int, str]:
    """The log level and line that say where a sweep's trials are kept, at the start of every run.

    A new store (a path with a typo in its file name makes a new file) is named as such, at INFO: it is
    also every first sweep's normal start, which logs no WARNING. A WARNING when the sweep starts fresh
    under a new name close to a stored one, where a continuation was likely meant. The URL's password
    is masked."""
    name = str(store.sweep(sweep_id)["name"])
    where = f"trials are stored in {store.safe_url}"
    if store.next_number(sweep_id) > 0:
        return logging.INFO, f"sweep {name!r}: {where}"
    others = [n for n in store.sweep_names() if n != name]
    if not others and sqlite_file(store.url) != default_home() / "hpo.db":
        return logging.INFO, (
            f"sweep {name!r} starts fresh: {store.safe_url} is a new store (it held no sweep before); "
            "if you meant to continue a sweep, check the storage path"
        )
    hint = did_you_mean(name, others)
    if hint:
        return logging.WARNING, f"sweep {name!r} is new in {store.safe_url}: {hint} (a new name starts a fresh sweep)"
    return logging.INFO, f"sweep {name!r}: {where} (a new sweep)"
