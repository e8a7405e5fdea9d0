"""The store's sweeps: reopened by name, refused or forked when the space differs, each with its own folder."""

from __future__ import annotations

import pytest

from prefect_hpo.errors import SweepConflictError
from prefect_hpo.store import SqlTrialStore
from tests.store.helpers import BUDGET, OBJ, SPACE, open_sweep


def test_sweep_reopens_and_refuses_a_different_space(storage_url: str) -> None:
    store = SqlTrialStore(storage_url)
    sid = open_sweep(store)
    assert open_sweep(store) == sid
    other = {"x": {"type": "float", "low": 0.0, "high": 2.0, "log": False}}
    with pytest.raises(SweepConflictError, match="different search space"):
        open_sweep(store, space=other)
    assert store.sweep_names() == ["s"]
    store.close()


def test_a_fork_runs_under_its_own_name_and_is_found_again(storage_url: str) -> None:
    store = SqlTrialStore(storage_url)
    original = open_sweep(store, "s_1")
    other = {"x": {"type": "float", "low": 0.0, "high": 2.0, "log": False}}
    third = {"x": {"type": "float", "low": 0.0, "high": 3.0, "log": False}}
    assert store.fork_name("s_1", other, OBJ) == "s_1-fork-1"
    first = store.open_sweep("s_1", space=other, objectives=OBJ, strategy="tpe", budget=BUDGET, fork=True)
    again = store.open_sweep("s_1", space=other, objectives=OBJ, strategy="tpe", budget=BUDGET, fork=True)
    assert first == again != original  # the same fork, continued
    second = store.open_sweep("s_1", space=third, objectives=OBJ, strategy="tpe", budget=BUDGET, fork=True)
    assert store.sweep_names() == ["s_1", "s_1-fork-1", "s_1-fork-2"]
    assert store.sweep(second)["name"] == "s_1-fork-2" and store.sweep(original)["space"] == SPACE
    assert open_sweep(store, "s_1", SPACE) == original  # the original is untouched and still opens
    store.close()


def test_each_new_sweep_records_a_checkpoint_folder_of_its_own(storage_url: str) -> None:
    store = SqlTrialStore(storage_url)
    rows = [store.sweep(open_sweep(store, name)) for name in ("ckpt a", "ckpt-a", "ckpt a-fork-1")]
    store.close()
    assert [r["checkpoint_folder"] for r in rows] == [
        f"ckpt-a-{rows[0]['uid']}",
        f"ckpt-a-{rows[1]['uid']}",
        f"ckpt-a-fork-1-{rows[2]['uid']}",
    ]
    assert len({r["uid"] for r in rows}) == 3
    assert all(r["legacy_checkpoint_folder"] is None and r["legacy_checkpoint_trials"] is None for r in rows)
