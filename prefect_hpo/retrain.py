"""`run_with_config`: run a training function once with a chosen configuration, outside any sweep.

What AutoGluon's `run_with_config` is for: retrain the best configuration on all
the data, then save the model. The training function gets the same `trial` handle
it gets in a sweep, so the same function serves both; its reports are kept in
memory (`RunRecord.reports`), not in a trial store, and nothing stops it early.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from prefect_hpo.objective import build_objectives
from prefect_hpo.records import Config, Report
from prefect_hpo.trial import TrainFn, Trial, TrialSpec, wants_trial


class MemorySink:
    """Where a single run's reports go: a list in memory. It never asks the run to stop."""

    def __init__(self) -> None:
        self.reports: list[Report] = []

    def add_report(
        self, trial_id: int, step: int, metrics: Mapping[str, float], *, sweep_id: int = 0, score: float | None = None
    ) -> str | None:
        self.reports.append(Report(number=0, step=step, metrics=dict(metrics)))
        return None

    def stop_request(self, trial_id: int) -> str | None:
        return None

    def request_stop(self, trial_id: int, reason: str) -> None:
        return None

    def total_steps(self, sweep_id: int) -> int:
        return 0  # a single run has no sweep-wide step budget

    def record_rung(self, sweep_id: int, trial_id: int, bracket: int, level: int, score: float) -> list[float]:
        return [score]

    def running_averages(self, sweep_id: int, trial_id: int, step: float) -> list[float]:
        return []


@dataclass(frozen=True)
class RunRecord:
    """One run with a given configuration: what the function returned, its reports, how long it took."""

    config: Config
    returned: Any
    reports: list[Report] = field(default_factory=list)
    duration: float = math.nan


def run_with_config(train: TrainFn, config: Mapping[str, Any], objective: str = "loss") -> RunRecord:
    """Run `train(config, trial)` (or `train(config)`) once; inside a flow it is a task run named after it."""
    return _run_task.with_options(task_run_name=f"run-with-config-{getattr(train, '__name__', 'train')}")(
        train, dict(config), objective
    )


@task(name="run-with-config", cache_policy=NO_CACHE, persist_result=False)
def _run_task(train: TrainFn, config: Config, objective: str) -> RunRecord:
    sink = MemorySink()
    spec = TrialSpec(
        trial_id=0,
        number=0,
        sweep_name="run-with-config",
        config=config,
        objectives=build_objectives(objective),
        max_steps=None,
        pass_trial=wants_trial(train),
    )
    started = time.perf_counter()
    returned = train(config, Trial(spec, sink)) if spec.pass_trial else train(config)
    return RunRecord(config=config, returned=returned, reports=sink.reports, duration=time.perf_counter() - started)
