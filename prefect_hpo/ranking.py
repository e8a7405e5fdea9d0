"""The one order of a sweep's trials, and the one step at which plots compare them.

Every view ranks trials with `ranked` / `ordered`: the summary and best-configuration
artifacts, `SweepResult.top()` (and so `prefect-hpo top`), `SweepController.top_details`.
The rule:

1. A trial is ranked when it has a finite value of the first objective and ran far enough
   to earn it: COMPLETE, PRUNED (stopped early by a scheduler or a stop) or PAUSED (waiting
   at a rung). Its value is the one the store holds: the objective at the highest step it
   reached (for a trial a scheduler stopped, at the rung where it stopped; for
   `min_global`/`max_global`, the best it reported up to there).
2. Ranked trials go best value first; at the same value, the trial that reached the higher
   step first (a complete trial that reported no step counts as having gone furthest);
   then the lower trial number.
3. `ordered` puts every other trial after them (failed, running, waiting, rejected, and
   duplicates, which stand for the trial they repeat), by trial number.

So in an early-stopped sweep a trial stopped at a rung with a better value than the
finished ones ranks ahead of them, instead of being buried among the failures.

Plots compare trials at one step (`compared_at_common_step`): the last step that every
ranked trial reached, each trial's value taken there, so that complete and stopped
trials share one axis and keep their stored numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from prefect_hpo.objective import Objective
from prefect_hpo.records import Report, TrialRecord, TrialState

#: The states whose value ranks a trial: it ran, and its value is the objective at the step it reached.
RANKED_STATES = frozenset({TrialState.COMPLETE, TrialState.PRUNED, TrialState.PAUSED})

#: (step, value) reports of one metric by one trial.
Reported = Sequence[tuple[int, float]]


def is_ranked(record: TrialRecord) -> bool:
    """Whether `record` takes part in the ranking (rule 1 of this module)."""
    value = record.value
    return record.state in RANKED_STATES and value is not None and math.isfinite(value)


def reached_step(record: TrialRecord) -> float:
    """The highest step `record` reached: its last reported step; a COMPLETE trial that reported none
    ran to its end, so it counts as having gone furthest (infinity); any other trial without one, 0."""
    if record.last_step is not None:
        return float(record.last_step)
    return math.inf if record.state == TrialState.COMPLETE else 0.0


def rank_key(record: TrialRecord, objective: Objective) -> tuple[float, float, int]:
    """The sort key of a ranked trial: value best first, then the higher step, then the lower number."""
    return (objective.sort_key(record.value), -reached_step(record), record.number)


def ranked(records: Iterable[TrialRecord], objective: Objective) -> list[TrialRecord]:
    """The ranked trials (rule 1), best first (rule 2)."""
    return sorted((r for r in records if is_ranked(r)), key=lambda r: rank_key(r, objective))


def ordered(records: Iterable[TrialRecord], objective: Objective) -> list[TrialRecord]:
    """Every trial: the ranked ones best first, then the rest by number (rule 3)."""
    records = list(records)
    rest = sorted((r for r in records if not is_ranked(r)), key=lambda r: r.number)
    return ranked(records, objective) + rest


@dataclass(frozen=True)
class Comparison:
    """The ranked trials' values of the first objective at one step, by their stored trial numbers."""

    #: The step compared at; None when every ranked trial is COMPLETE: then their final values are compared.
    step: int | None
    #: trial number -> value at `step`.
    values: dict[int, float]
    #: how many of `values` belong to COMPLETE trials (the rest were stopped early or are paused).
    complete: int
    #: ranked trials left out: they reported no value of the objective's metric, so no step is known.
    left_out: int = 0

    def describe(self) -> str:
        """One line saying what the plots show, e.g. 'at step 3, the last step all 40 trials reached
        (3 complete, 37 stopped early)'."""
        n = len(self.values)
        if self.step is None:
            text = f"final values of {n} complete trial{'s' if n != 1 else ''}"
        else:
            text = (
                f"at step {self.step}, the last step all {n} trials reached "
                f"({self.complete} complete, {n - self.complete} stopped early)"
            )
        if self.left_out:
            text += f"; {self.left_out} trial{'s' if self.left_out != 1 else ''} without reports left out"
        return text


def reported_values(reports: Iterable[Report], metric: str) -> dict[int, list[tuple[int, float]]]:
    """Each trial's finite reports of `metric` as (step, value), in step order."""
    out: dict[int, list[tuple[int, float]]] = {}
    for report in reports:
        value = report.metrics.get(metric)
        if value is not None and math.isfinite(value):
            out.setdefault(report.number, []).append((report.step, float(value)))
    return {number: sorted(steps) for number, steps in out.items()}


def compared_at_common_step(
    records: Iterable[TrialRecord], reported: Mapping[int, Reported], objective: Objective
) -> Comparison:
    """The ranked trials at the last step they all reached (the lowest of their highest reported steps).

    Each trial's value there is the one a rung reads: its first report at or past that step (the
    best reported up to that report for `*_global` modes). When every ranked trial is COMPLETE, their
    final values are compared instead (a sweep without early stopping, or without reports).
    """
    trials = [r for r in records if is_ranked(r)]
    if all(r.state == TrialState.COMPLETE for r in trials):
        values = {r.number: r.value for r in trials if r.value is not None}
        return Comparison(None, values, complete=len(values))
    series = {r.number: list(reported[r.number]) for r in trials if reported.get(r.number)}
    step = min(steps[-1][0] for steps in series.values()) if series else 0
    values = {number: value_at(steps, step, objective) for number, steps in series.items()}
    complete = sum(1 for r in trials if r.number in values and r.state == TrialState.COMPLETE)
    return Comparison(step, values, complete=complete, left_out=len(trials) - len(values))


def value_at(steps: Reported, step: int, objective: Objective) -> float:
    """A trial's value at `step` from its (step, value) reports in step order: the first report at or past
    `step` (the best up to it for `*_global` modes), as a rung reads it. `steps` must reach `step`."""
    crossing = next(i for i, (s, _) in enumerate(steps) if s >= step)
    if not objective.uses_best_reported:
        return steps[crossing][1]
    seen = [v for _, v in steps[: crossing + 1]]
    return min(seen) if objective.direction == "minimize" else max(seen)
