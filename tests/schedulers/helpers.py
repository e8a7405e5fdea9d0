"""Drive a scheduler through a real trial store with a scripted sequence of reports."""

from __future__ import annotations

import math
from collections.abc import Iterable

from prefect_hpo.schedulers.base import Action, ReportEvent, Scheduler
from prefect_hpo.store import SqlTrialStore


def drive(
    scheduler: Scheduler, url: str, events: Iterable[tuple[int, int, float]], maximize: bool = False
) -> dict[int, int]:
    """Feed (trial number, step, value) reports in order; return {trial number: step at which it was stopped}.

    Reports of a trial after it was stopped are dropped, as a stopped trial sends no more.
    """
    store = SqlTrialStore(url)
    sid = store.open_sweep("drive", space={}, objectives=[], strategy="-", budget={})
    ids: dict[int, int] = {}
    last: dict[int, int] = {}
    best: dict[int, float] = {}
    stopped: dict[int, int] = {}
    for number, step, value in events:
        if number in stopped:
            continue
        if number not in ids:
            rec = store.create_trial(sid, number, {"n": number}, f"h{number}", bracket=scheduler.bracket_for(number))
            ids[number] = rec.id
        score = -value if maximize else value
        if not math.isnan(score):
            best[number] = min(best.get(number, math.inf), score)
        store.add_report(ids[number], step, {"v": value}, sweep_id=sid, score=score)
        event = ReportEvent(
            sweep_id=sid,
            trial_id=ids[number],
            number=number,
            bracket=store.trial(sid, number).bracket,
            step=step,
            score=score,
            best=best.get(number, math.nan),
            previous_step=last.get(number),
        )
        last[number] = step
        if scheduler.on_report(event, store).action == Action.STOP:
            stopped[number] = step
    store.close()
    return stopped
