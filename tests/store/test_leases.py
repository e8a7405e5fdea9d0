"""The store's leases: one parent holds a sweep at a time; a dead or silent one is taken over."""

from __future__ import annotations

import pytest

from prefect_hpo.errors import SweepBusyError
from prefect_hpo.store import SqlTrialStore
from tests.store.helpers import open_sweep


def _alive(owner: str) -> bool:
    return True


def _dead(owner: str) -> bool:
    return False


def test_a_live_owner_keeps_its_sweep_and_a_dead_or_silent_one_is_taken_over(storage_url: str) -> None:
    store = SqlTrialStore(storage_url)
    sweep_id = open_sweep(store)
    store.start_sweep(sweep_id, flow_run_id="run-1")
    assert store.claim_sweep(sweep_id, "a", 30.0, _alive) == (None, "run-1")
    assert store.claim_sweep(sweep_id, "a", 30.0, _alive) == (None, "run-1")  # its own claim, again
    with pytest.raises(SweepBusyError, match=r"sweep 's' is being run by a \(flow run run-1\)"):
        store.claim_sweep(sweep_id, "b", 30.0, _alive)
    assert store.claim_sweep(sweep_id, "b", 30.0, _dead) == ("a", "run-1")  # a is known dead: taken over
    assert not store.renew_claim(sweep_id, "a") and store.renew_claim(sweep_id, "b")
    store.release_sweep(sweep_id, "a")  # not a's to release any more: b keeps it
    with pytest.raises(SweepBusyError, match="being run by b"):
        store.claim_sweep(sweep_id, "c", 30.0, _alive)
    assert store.claim_sweep(sweep_id, "c", 0.0, _alive) == ("b", "run-1")  # silent for longer than stale_after
    store.release_sweep(sweep_id, "c")
    assert store.claim_sweep(sweep_id, "d", 30.0, _alive) == (None, "run-1")  # released: nobody held it
    store.close()
