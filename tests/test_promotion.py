"""Promotion-form ASHA end to end: pause at rungs with a checkpoint, resume the best, leave the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_hpo import Budget, Float, SqlTrialStore, TrialState, sweep
from prefect_hpo.records import Config, TrialRecord
from prefect_hpo.schedulers import ASHAScheduler
from prefect_hpo.schedulers.base import asha_keeps
from prefect_hpo.trial import Trial

pytestmark = pytest.mark.prefect


def resumable(config: Config, trial: Trial) -> dict[str, float]:
    """Counts its epochs in a checkpoint, so a resumed attempt continues where it paused."""
    state = trial.load_checkpoint() or {"epoch": 0, "history": []}
    assert (trial.resume_step or 0) == state["epoch"], "resumed at another step than the checkpoint"
    loss = 1.0
    for epoch in range(state["epoch"] + 1, 28):
        loss = config["q"] + 1.0 / epoch
        state = {"epoch": epoch, "history": [*state["history"], epoch]}
        trial.save_checkpoint(state)  # before report: report may pause the trial here
        trial.report(epoch, loss=loss, epochs_trained=len(state["history"]))
    return {"loss": loss, "epochs_trained": float(len(state["history"]))}


def _highest_rungs(store: SqlTrialStore, records: list[TrialRecord]) -> list[tuple[int, int, int, float]]:
    """(number, bracket, level, score) of each trial's highest rung, from the store's rung rows."""
    top: dict[int, tuple[int, int, int, float]] = {}
    for _id, number, bracket, level, score in store.rungs(records[0].sweep_id):
        if number not in top or level > top[number][2]:
            top[number] = (number, bracket, level, score)
    return list(top.values())


@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_trials_pause_resume_from_checkpoints_and_the_rest_are_left(
    sqlite_url: str, tmp_path: Path, workers: str
) -> None:
    result = sweep(
        resumable,
        {"q": Float(0.0, 1.0)},
        "loss",
        "random",
        Budget(max_trials=9, max_concurrent=2),
        storage=sqlite_url,
        scheduler=ASHAScheduler(max_t=27, grace_period=1, reduction_factor=3, mode="promotion"),
        checkpoints=str(tmp_path / "ckpt"),
        seed=0,
        workers=workers,  # type: ignore[arg-type]
    )
    records = result.records
    assert len(records) == 9  # paused trials count towards max_trials once
    complete = [r for r in records if r.state == TrialState.COMPLETE]
    left = [r for r in records if r.state == TrialState.PRUNED]
    assert complete and left and not [r for r in records if r.state == TrialState.PAUSED]
    for r in complete:
        # reached max_t over several attempts, training every epoch exactly once
        assert r.last_step == 27 and r.attempt >= 3 and r.metrics["epochs_trained"] == 27
    assert all("not promoted" in (r.reason or "") for r in left)
    assert all(r.last_step in (1, 3, 9) for r in left)
    # the best configuration is among the promoted ones
    assert result.best_config is not None and result.best_config["q"] == min(r.config["q"] for r in complete)
    # a trial is left behind only when it could not be promoted: at the end it is outside the top
    # 1/reduction_factor of every score recorded at its highest rung (which trials those are depends on
    # the order in which trials reached the rungs, so it is not always the globally worst ones)
    store = SqlTrialStore(sqlite_url)
    rung_of = {number: (bracket, level, score) for number, bracket, level, score in _highest_rungs(store, records)}
    for r in left:
        bracket, level, score = rung_of[r.number]
        assert not asha_keeps(score, store.rung_scores(r.sweep_id, bracket, level), 3)
    # checkpoints live on the filesystem, one folder per trial, in the sweep's own folder
    [folder] = (tmp_path / "ckpt").iterdir()
    assert folder.name == f"resumable-{store.sweep(records[0].sweep_id)['uid']}"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"trial-{r.number}" for r in records)
    assert all(Path(result.checkpoint_path(r.number)).parent == folder for r in records)
    # each report is stored once per step: resumed attempts do not repeat steps
    steps = [(rep.number, rep.step) for rep in store.reports(records[0].sweep_id)]
    assert len(steps) == len(set(steps)) == sum(r.last_step or 0 for r in records)


def test_next_promotion_prefers_the_highest_rung_then_the_best(sqlite_url: str) -> None:
    from prefect_hpo.records import Outcome

    asha = ASHAScheduler(max_t=27, grace_period=1, reduction_factor=2, mode="promotion")
    store = SqlTrialStore(sqlite_url)
    sid = store.open_sweep("p", space={}, objectives=[], strategy="-", budget={})
    scores = {0: (1, 0.5), 1: (1, 0.2), 2: (1, 0.9), 3: (1, 0.4), 4: (2, 0.3)}
    for number, (level, score) in scores.items():
        rec = store.create_trial(sid, number, {"n": number}, f"h{number}")
        if level == 2:
            store.record_rung(sid, rec.id, 0, 1, score)
        store.record_rung(sid, rec.id, 0, level, score)
        store.finish_trial(rec.id, Outcome(TrialState.PAUSED, values=(score,), last_step=level))
    assert asha.next_promotion(store, sid) == (4, 2)  # alone at rung 2: promotable, and highest
    store.leave_paused(sid, "test")  # everyone PRUNED: nothing to promote
    assert asha.next_promotion(store, sid) is None
