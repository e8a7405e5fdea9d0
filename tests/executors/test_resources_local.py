"""Resources on this machine, end to end: real sweeps, real worker processes, a declared inventory (CI has no
GPU). Each trial logs what its own process saw; the tests check the environment, that no device was ever
over-packed (from the logged intervals), that a SIGKILLed trial's device is used again, and that an impossible
request is refused before anything runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prefect_hpo import Budget, Categorical, Fixed, Int, SqlTrialStore, TrialState, sweep
from prefect_hpo.errors import PrefectHPOError
from tests.resources_train import holds_devices

pytestmark = pytest.mark.prefect


def logged(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def most_held(runs: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Each (host, device)'s largest share held at once, over the logged intervals (a killed run ends when
    killed)."""
    spans = [(r["start"], r.get("end", r.get("killed")), r) for r in runs]
    most: dict[tuple[str, str], float] = {}
    for start, _, _ in spans:
        for host, device in {(r["host"], d) for _, _, r in spans for d in r["devices"]}:
            held = sum(
                min(1.0, r["resources"]["gpu"])
                for s, e, r in spans
                if r["host"] == host and device in r["devices"] and s <= start < e
            )
            most[host, device] = max(most.get((host, device), 0.0), held)
    return most


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_trials_hold_declared_gpus_and_their_thread_share_without_over_packing(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    storage = f"sqlite:///{tmp_path / 'hpo.db'}" if store == "sqlite" else request.getfixturevalue("pg_url")
    log = tmp_path / "runs.jsonl"
    space = {
        "size": Categorical([0.5, 1, 2]),
        "i": Int(0, 2),
        "dies": Fixed(1),
        "seconds": Fixed(0.6),
        "log": Fixed(str(log)),
    }
    result = sweep(
        holds_devices,
        space,
        objective="loss",
        strategy="grid",
        budget=Budget(max_trials=9, max_concurrent=4),
        storage=storage,
        name="gpus",
        resources=lambda c: {"gpu": c["size"]},
        devices=["0", "1"],
        capacity={"cpu": 8},
        artifact_interval=None,
    )
    assert len(result.trials_by_state(TrialState.COMPLETE)) == len(result.trials) == 9
    frame = result.trials
    assert set(frame["cpu_threads"]) == {2}  # recorded in the store, as each trial's process was given
    held = dict(zip(frame["number"], frame["devices"], strict=True))
    runs = logged(log)
    assert len(runs) == 9 + 3  # the three trials with i=1 were SIGKILLed once and ran again
    for run in runs:
        assert run["cuda"] == ",".join(run["devices"])  # the trial's process sees its own GPUs only
        if "end" in run:
            assert held[run["number"]] == run["cuda"]  # the store says which GPUs the trial held
        assert len(run["devices"]) == max(1, run["resources"]["gpu"])
        assert run["omp"] == run["openblas"] == "2"  # 8 cores among 4 slots
    assert max(most_held(runs).values()) <= 1.0  # no device ever held past its whole
    assert len({r["pid"] for r in runs}) == len(runs)  # trials holding GPUs run in processes of their own
    for killed in (r for r in runs if "killed" in r):  # its devices were used again after its death
        assert any(set(r["devices"]) & set(killed["devices"]) and r["start"] >= killed["killed"] for r in runs), killed


def test_an_impossible_request_is_refused_before_any_trial(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    space = {"i": Int(0, 3), "dies": Fixed(-1), "seconds": Fixed(0.0), "log": Fixed(str(tmp_path / "runs.jsonl"))}
    with pytest.raises(PrefectHPOError, match=r"resources\['gpu'\]=2 but this machine has 1 GPU\(s\) \(0\)"):
        sweep(holds_devices, space, storage=storage, name="too-big", resources={"gpu": 2}, devices=[0])
    with pytest.raises(PrefectHPOError, match=r"resources\['gpu'\]=0.3 does not divide a device evenly"):
        sweep(holds_devices, space, storage=storage, name="odd", resources={"gpu": 0.3}, devices=[0])
    with pytest.raises(PrefectHPOError, match=r"no capacity of 'license' is declared"):
        sweep(holds_devices, space, storage=storage, name="custom", resources={"license": 1}, devices=None)
    assert not (tmp_path / "runs.jsonl").exists()
    store = SqlTrialStore(storage)
    try:
        assert store.sweep_names() == []  # refused before the sweep was written
    finally:
        store.close()
