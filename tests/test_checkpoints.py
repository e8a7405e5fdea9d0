"""Checkpoints belong to one sweep: names that clean alike, one name in two stores, stores from before.

Each sweep runs on 4 worker processes. A trial reports what `trial.load_checkpoint()` gave it before it
saved its own: a fresh trial must find nothing, a resumed one its own checkpoint.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from sqlalchemy import create_engine

from prefect_hpo import Budget, Float, SweepResult, TrialState, sweep
from prefect_hpo.objective import build_objectives
from prefect_hpo.space import SearchSpace
from prefect_hpo.store import migrate, schema
from prefect_hpo.store.sweeps import fingerprint

SPACE = {"x": Float(0.0, 1.0)}


def remembers(config: dict[str, Any], trial: Any) -> dict[str, float]:
    """Saves who it is; reports the step of the checkpoint it found first (0: none)."""
    found = trial.load_checkpoint()
    trial.save_checkpoint({"sweep": trial.sweep_name, "number": trial.number, "step": 5})
    return {"loss": config["x"], "found": 0.0 if found is None else float(found["step"])}


def _sweep(url: str, name: str, root: Path, keep_top_k: int | None = None) -> SweepResult:
    return sweep(
        remembers,
        SPACE,
        "loss",
        "random",
        Budget(max_trials=4, max_concurrent=4),
        url,
        name,
        seed=1,
        checkpoints=str(root),
        workers="processes",
        keep_top_k=keep_top_k,
        artifact_interval=None,
    )


def _saved(result: SweepResult, number: int) -> Any:
    with open(f"{result.checkpoint_path(number)}/checkpoint.pkl", "rb") as f:
        return cloudpickle.load(f)


def _assert_apart(first: SweepResult, second: SweepResult, root: Path) -> None:
    """`second` (keep_top_k=1) ran after `first` with the same checkpoint root and saw nothing of it."""
    assert [r.state for r in first.records + second.records] == [TrialState.COMPLETE] * 8
    # before: each of the second sweep's fresh trials loaded the first sweep's trial of its number
    assert [r.metrics["found"] for r in second.records] == [0.0] * 4
    # before: keep_top_k=1 on the second removed three of the first's folders (1 file left, not 5)
    assert len(list(root.rglob("checkpoint.pkl"))) == 4 + 1
    for record in first.records:  # all kept, none overwritten
        assert _saved(first, record.number) == {"sweep": first.name, "number": record.number, "step": 5}
    best = second.best_trial
    assert best is not None and _saved(second, best.number)["sweep"] == second.name
    assert first.checkpoint_path(0) != second.checkpoint_path(0)


@pytest.mark.parametrize("storage", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_sweeps_whose_names_clean_alike_keep_their_own_checkpoints(
    storage: str, sqlite_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = sqlite_url if storage == "sqlite" else str(request.getfixturevalue("pg_url"))
    root = tmp_path / "checkpoints"
    first = _sweep(url, "ckpt a", root)
    second = _sweep(url, "ckpt-a", root, keep_top_k=1)
    _assert_apart(first, second, root)


@pytest.mark.postgres
def test_one_name_in_two_stores_keeps_its_own_checkpoints(sqlite_url: str, pg_url: str, tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    first = _sweep(sqlite_url, "ckpt", root)
    second = _sweep(pg_url, "ckpt", root, keep_top_k=1)
    _assert_apart(first, second, root)


def _store_before_the_change(url: str, name: str) -> None:
    """A store as the last release left it (revision 0003): trial 0 COMPLETE, trial 1 INTERRUPTED at step 3."""
    engine = create_engine(url)
    objectives = [o.to_dict() for o in build_objectives("loss")]
    space = SearchSpace.build(SPACE).to_dict()
    now = time.time()
    with engine.begin() as conn:
        migrate.upgrade(conn, "0003")
        conn.execute(
            schema.sweeps.insert().values(
                id=1,
                name=name,
                uid="0123456789abcdef0123456789abcdef",
                space=space,
                objectives=objectives,
                strategy="random",
                budget={"max_trials": 2},
                fingerprint=fingerprint(space, objectives),
                status="interrupted",
                created_at=now,
            )
        )
        rows: list[dict[str, Any]] = [
            {"number": 0, "state": "COMPLETE", "config": {"x": 0.5}, "values": [2.0], "value": 2.0, "last_step": 5},
            {"number": 1, "state": "INTERRUPTED", "config": {"x": 0.25}, "last_step": 3},
        ]
        for row in rows:
            conn.execute(
                schema.trials.insert().values(
                    sweep_id=1, attempt=1, config_hash=f"h{row['number']}", created_at=now, bracket=0, **row
                )
            )
    engine.dispose()


def _write(path: Path, state: dict[str, Any]) -> None:
    path.mkdir(parents=True)
    with open(path / "checkpoint.pkl", "wb") as f:
        cloudpickle.dump(state, f)


@pytest.mark.parametrize("storage", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_sweep_from_before_keeps_its_folder_and_its_new_trials_start_clean(
    storage: str, sqlite_url: str, tmp_path: Path, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    url = sqlite_url if storage == "sqlite" else str(request.getfixturevalue("pg_url"))
    caplog.set_level(logging.INFO, "prefect_hpo.checkpoints")
    root = tmp_path / "checkpoints"
    _store_before_the_change(url, "old run")
    legacy = root / "old-run"  # the last release's folder: the cleaned name
    _write(legacy / "trial-0", {"sweep": "old run", "number": 0, "step": 5})
    _write(legacy / "trial-1", {"sweep": "old run", "number": 1, "step": 3})
    # what a sweep named "old run" in another store (or "old-run" in this one) left there
    _write(legacy / "trial-2", {"sweep": "old-run", "number": 2, "step": 99})
    result = _sweep(url, "old run", root, keep_top_k=1)
    records = {r.number: r for r in result.records}
    assert sorted(records) == [0, 1, 2, 3] and all(r.state == TrialState.COMPLETE for r in records.values())
    assert records[1].attempt == 2 and records[1].metrics["found"] == 3.0  # resumed from its own old checkpoint
    # before: trial 2 loaded the other sweep's checkpoint (step 99)
    assert (records[2].metrics["found"], records[3].metrics["found"]) == (0.0, 0.0)
    # the old folder may be shared with another sweep: keep_top_k removes none of it, and no new trial writes
    # there (before: trial 0, worst of all, was removed, and trial 2 overwrote the other sweep's checkpoint)
    assert result.checkpoint_path(0) == f"{root}/old-run/trial-0"
    assert result.checkpoint_path(1) == f"{root}/old-run/trial-1"
    assert (legacy / "trial-0" / "checkpoint.pkl").exists() and (legacy / "trial-1" / "checkpoint.pkl").exists()
    with open(legacy / "trial-2" / "checkpoint.pkl", "rb") as f:
        assert cloudpickle.load(f)["step"] == 99
    assert f"keep_top_k leaves the checkpoints of trials 0-1 in {root}/old-run" in caplog.text
    assert _saved(result, 1) == {"sweep": "old run", "number": 1, "step": 5}
    # the new trials live in the sweep's own folder, and keep_top_k keeps the best of them only
    assert Path(result.checkpoint_path(2)).parent.name == "old-run-0123456789abcdef0123456789abcdef"
    best = result.best_trial
    assert best is not None
    kept = [n for n in (2, 3) if Path(result.checkpoint_path(n)).exists()]
    assert kept == ([best.number] if best.number in (2, 3) else [])
