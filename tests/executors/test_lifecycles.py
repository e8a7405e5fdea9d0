"""Executors and stores as context managers: leaving the block releases what they hold, however it ends."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from prefect_hpo.executors.base import ClosedOnExit
from prefect_hpo.executors.local import LocalTrials
from prefect_hpo.store import SqlTrialStore


class CountsCloses(ClosedOnExit):
    def __init__(self) -> None:
        self.closes = 0

    def close(self) -> None:
        self.closes += 1


class TestClosedOnExit:
    def test_the_block_returns_the_executor_and_its_end_closes_it(self) -> None:
        with CountsCloses() as executor:
            assert executor.closes == 0
        assert executor.closes == 1

    def test_an_error_in_the_block_closes_it_and_goes_on(self) -> None:
        executor = CountsCloses()
        with pytest.raises(RuntimeError, match="in the block"), executor:
            raise RuntimeError("in the block")
        assert executor.closes == 1


def open_files_under(folder: Path) -> list[str]:
    return [f.path for f in psutil.Process().open_files() if Path(f.path).is_relative_to(folder)]


def test_a_store_and_a_local_executor_release_the_database_when_their_block_ends(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    with (
        pytest.raises(RuntimeError, match="the sweep failed"),
        SqlTrialStore(url) as store,
        LocalTrials(lambda c: 0.0, store, workers="threads") as executor,
    ):
        sweep_id = store.open_sweep("held", space={}, objectives=[], strategy="-", budget={})
        store.trials(sweep_id)
        assert executor.wait_any([], timeout=0) == []
        assert open_files_under(tmp_path)  # the pool keeps its SQLite connections open while the store is
        raise RuntimeError("the sweep failed")
    assert open_files_under(tmp_path) == []
