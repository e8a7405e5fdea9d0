"""The store's offers of trials to runners: each offer goes to one runner only, and only while its attempt runs."""

from __future__ import annotations

import multiprocessing
from typing import Any

from prefect_hpo.records import Outcome, TrialState
from prefect_hpo.store import SqlTrialStore
from tests.store.helpers import open_sweep

SPEC: dict[str, Any] = {"sweep_name": "s", "objectives": []}


def test_an_offer_is_claimed_once_oldest_first_on_its_queue_and_within_the_runners_gpus(storage_url: str) -> None:
    store = SqlTrialStore(storage_url)
    sid = open_sweep(store)
    first, second, big = (store.create_trial(sid, n, {"x": n}, f"h{n}") for n in range(3))
    store.offer(sid, first.id, 1, "cpu", 0, SPEC)
    store.offer(sid, second.id, 1, "cpu", 0, SPEC)
    store.offer(sid, big.id, 1, "gpu", 2, SPEC)
    assert store.offers(sid) == {"cpu": (2, 0), "gpu": (1, 0)}
    assert store.claim(sid, "gpu", "one-gpu-host", gpus_here=1) is None  # it needs two
    assert not store.waiting(sid, "gpu", gpus_here=1) and store.waiting(sid, "gpu", gpus_here=2)
    claimed = store.claim(sid, "cpu", "runner-a", gpus_here=0)
    assert claimed is not None and (claimed.number, claimed.attempt, claimed.spec) == (0, 1, SPEC)
    assert store.heartbeat(first.id) is not None  # the claim is the trial's first sign of life
    assert store.trial(sid, 0).worker == "runner-a"
    again = store.claim(sid, "cpu", "runner-b", gpus_here=0)
    assert again is not None and again.number == 1
    assert store.claim(sid, "cpu", "runner-c", gpus_here=0) is None
    assert store.offers(sid) == {"cpu": (0, 2), "gpu": (1, 0)}
    store.release(first.id, 1)
    assert store.offers(sid)["cpu"] == (0, 1)
    store.close()


def test_an_attempt_that_ended_or_was_taken_back_is_never_claimed(storage_url: str) -> None:
    store = SqlTrialStore(storage_url)
    sid = open_sweep(store)
    ended, withdrawn, retried = (store.create_trial(sid, n, {"x": n}, f"h{n}") for n in range(3))
    for trial in (ended, withdrawn, retried):
        store.offer(sid, trial.id, 1, "cpu", 0, SPEC)
    store.end_attempt(ended.id, 1, Outcome(TrialState.PRUNED, reason="stopped before it started"))
    assert store.withdraw(withdrawn.id, 1) and not store.withdraw(withdrawn.id, 1)
    store.end_attempt(retried.id, 1, Outcome(TrialState.FAIL_RECOVERABLE, error="its runner died"))
    store.resume_trial(retried.id)  # attempt 2: the offer of attempt 1 must not run it
    assert store.claim(sid, "cpu", "runner", gpus_here=0) is None
    store.offer(sid, retried.id, 2, "cpu", 0, SPEC)
    store.offer(sid, retried.id, 2, "cpu", 0, SPEC)  # a resumed parent offers it again: one offer stands
    claimed = store.claim(sid, "cpu", "runner", gpus_here=0)
    assert claimed is not None and (claimed.number, claimed.attempt) == (2, 2)
    assert not store.withdraw(retried.id, 2)  # claimed: no longer the parent's to take back
    assert store.withdraw_all(sid) == 1  # the stale offer of the trial that ended unclaimed
    assert store.offers(sid) == {"cpu": (0, 1)}
    store.close()


def _claim_all(url: str, sweep_id: int, runner: str, out: Any, start: Any) -> None:
    store = SqlTrialStore(url, create=False)
    start.wait(timeout=120)  # every claimer has opened the store: they start claiming together
    try:
        while (offer := store.claim(sweep_id, "cpu", runner, gpus_here=0)) is not None:
            out.put((runner, offer.number))
    finally:
        store.close()
        out.put((runner, None))


def test_runners_claiming_at_once_from_four_processes_never_get_the_same_offer(storage_url: str) -> None:
    store = SqlTrialStore(storage_url)
    sid = open_sweep(store)
    for number in range(200):
        trial = store.create_trial(sid, number, {"x": number}, f"h{number}")
        store.offer(sid, trial.id, 1, "cpu", 0, SPEC)
    store.close()
    context = multiprocessing.get_context("spawn")
    out, start = context.Queue(), context.Barrier(4)
    claimers = [context.Process(target=_claim_all, args=(storage_url, sid, f"r{i}", out, start)) for i in range(4)]
    for process in claimers:
        process.start()
    claimed: list[tuple[str, int]] = []
    finished = 0
    while finished < len(claimers):
        runner, number = out.get(timeout=120)
        if number is None:
            finished += 1
        else:
            claimed.append((runner, number))
    for process in claimers:
        process.join(timeout=30)
        assert process.exitcode == 0
    numbers = [number for _, number in claimed]
    assert sorted(numbers) == list(range(200))  # every offer claimed, none twice
    assert len({runner for runner, _ in claimed}) >= 2  # the claims really raced
