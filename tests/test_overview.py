"""The sweeps of a store: listing, close-match names, and the line each sweep starts with."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from prefect_hpo import Budget, Float, sweep
from prefect_hpo.errors import StoreError
from prefect_hpo.overview import find_sweep, list_sweeps, store_line
from prefect_hpo.records import Outcome, TrialState
from prefect_hpo.store.sql import SqlTrialStore

SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0, "log": False}}


def add_sweep(store: SqlTrialStore, name: str, values: list[float | None], mode: str = "min") -> int:
    """A sweep with one trial per value (None: a failed trial)."""
    sweep_id = store.open_sweep(
        name, space=SPACE, objectives=[{"metric": "loss", "mode": mode}], strategy="random", budget={}
    )
    for number, value in enumerate(values):
        trial = store.create_trial(sweep_id, number, {"x": 0.1 * number}, f"h{number}")
        outcome = Outcome(TrialState.FAIL, error="boom") if value is None else Outcome(TrialState.COMPLETE, (value,))
        store.finish_trial(trial.id, outcome)
    return sweep_id


@pytest.fixture
def store(sqlite_url: str) -> Iterator[SqlTrialStore]:
    opened = SqlTrialStore(sqlite_url)
    yield opened
    opened.close()


def test_list_sweeps_counts_trials_by_state_and_ranks_by_each_objective(store: SqlTrialStore) -> None:
    add_sweep(store, "digits-mlp", [0.5, None, 0.25])
    add_sweep(store, "cifar", [0.75, 0.5], mode="max")
    frame = list_sweeps(store)
    assert frame["name"].tolist() == ["digits-mlp", "cifar"]
    assert frame[["trials", "COMPLETE", "FAIL"]].values.tolist() == [[3, 2, 1], [2, 2, 0]]
    assert frame["best"].tolist() == [0.25, 0.75]
    assert frame["objective"].tolist() == ["loss:min", "loss:max"]
    assert frame["status"].tolist() == ["created", "created"] and frame["updated"].notna().all()


def test_an_unknown_name_gets_close_matches_and_the_listing_command(store: SqlTrialStore) -> None:
    add_sweep(store, "digits-mlp", [0.5])
    with pytest.raises(StoreError) as info:
        find_sweep(store, "digit-mlp", "`prefect-hpo ls`")
    assert "no sweep named 'digit-mlp'" in str(info.value) and "it holds 1 sweep" in str(info.value)
    assert "did you mean 'digits-mlp'?" in str(info.value) and str(info.value).endswith(
        "list them with `prefect-hpo ls`"
    )
    with pytest.raises(StoreError) as info:
        find_sweep(store, "zzz", "`prefect-hpo ls`")
    assert "did you mean" not in str(info.value)
    assert find_sweep(store, "digits-mlp", "-") == store.sweep_id("digits-mlp")


def test_the_start_line_names_the_store_and_warns_where_a_continuation_went_astray(
    store: SqlTrialStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = add_sweep(store, "digits-mlp", [])
    level, line = store_line(store, first)
    assert level == logging.INFO and f"{store.safe_url} is a new store" in line and "check the storage path" in line
    add_sweep(store, "digits-mlp", [0.5])  # the same sweep, continued: it has trials now
    assert store_line(store, first) == (logging.INFO, f"sweep 'digits-mlp': trials are stored in {store.safe_url}")
    level, line = store_line(store, add_sweep(store, "digits-mpl", []))
    assert level == logging.WARNING and "did you mean 'digits-mlp'?" in line
    assert store_line(store, add_sweep(store, "cifar", [])) == (
        logging.INFO,
        f"sweep 'cifar': trials are stored in {store.safe_url} (a new sweep)",
    )
    monkeypatch.setenv("PREFECT_HPO_HOME", str(tmp_path / "home"))  # the default store: a first sweep is no surprise
    (tmp_path / "home").mkdir()
    default = SqlTrialStore(f"sqlite:///{tmp_path / 'home' / 'hpo.db'}")
    try:
        assert store_line(default, add_sweep(default, "first", []))[0] == logging.INFO
    finally:
        default.close()


@pytest.mark.postgres
def test_the_start_line_masks_the_password(pg_url: str) -> None:
    url = make_url(pg_url).set(password="s3cret").render_as_string(hide_password=False)  # trust auth ignores it
    store = SqlTrialStore(url)
    try:
        _, line = store_line(store, add_sweep(store, "pg", []))
    finally:
        store.close()
    assert "s3cret" not in line and ":***@" in line


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


def test_a_sweep_into_a_new_store_says_so_at_its_start(tmp_path: Path) -> None:
    lines = _Lines()
    logger = logging.getLogger("prefect.flow_runs")
    logger.addHandler(lines)
    level = logger.level
    logger.setLevel(logging.INFO)  # the tests run Prefect at WARNING
    try:
        sweep(
            lambda c: c["x"],
            {"x": Float(0.0, 1.0)},
            budget=Budget(max_trials=1),
            storage=str(tmp_path / "hpo.db"),
            name="fresh",
            workers="threads",
            artifact_interval=None,
        )
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    assert (
        logging.INFO,
        f"sweep 'fresh' starts fresh: sqlite:///{tmp_path / 'hpo.db'} is a new store "
        "(it held no sweep before); if you meant to continue a sweep, check the storage path",
    ) in lines.lines
