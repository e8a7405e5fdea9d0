"""The running trial as the training function sees it: the `trial` handle it reports through.

`Trial` is what `train(config, trial)` receives; `TrialSpec` is everything a trial needs to run, in plain
data that crosses process boundaries. The code that runs a training function and turns how it ended
into an `Outcome` is `prefect_hpo.training`.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from prefect_hpo.errors import TrialFunctionError, TrialPaused, TrialStopped
from prefect_hpo.objective import Objective
from prefect_hpo.records import Config
from prefect_hpo.schedulers.base import Action, ReportEvent, Scheduler, SchedulerStore, scheduler_clock
from prefect_hpo.trial_result import TOO_LARGE, shown_number

TrainFn = Callable[..., Any]


class ReportSink(SchedulerStore, Protocol):
    """The part of the store a running trial writes to."""

    def add_report(
        self, trial_id: int, step: int, metrics: Mapping[str, float], *, sweep_id: int = 0, score: float | None = None
    ) -> str | None: ...

    def stop_request(self, trial_id: int) -> str | None: ...

    def request_stop(self, trial_id: int, reason: str) -> None: ...

    def total_steps(self, sweep_id: int) -> int: ...


@dataclass(frozen=True)
class TrialSpec:
    """Everything a trial needs to run, in plain data (it crosses process boundaries)."""

    trial_id: int
    number: int
    sweep_name: str
    config: Config
    objectives: tuple[Objective, ...]
    max_steps: int | None
    pass_trial: bool
    sweep_id: int = 0
    bracket: int = 0
    scheduler: Scheduler | None = None
    min_steps: int | None = None
    attempt: int = 1
    resume_step: int | None = None
    #: this trial's checkpoint folder (a local folder or an fsspec URL), from the sweep's recorded layout
    checkpoint_path: str | None = None
    max_total_steps: int | None = None
    #: what the trial asked for ({"gpu": 1, "cpu": 2}), and what it holds on this machine: its GPUs (as CUDA
    #: names them) and the thread count its process's BLAS and OpenMP libraries are given (None: not set)
    resources: Mapping[str, float] = field(default_factory=dict)
    devices: tuple[str, ...] = ()
    cpu_threads: int | None = None

    @cached_property  # asked at every report; the Protocol check behind it costs ~50 us
    def time_attr(self) -> str | None:
        """The reported metric the scheduler reads as its clock (None: the report's step)."""
        return scheduler_clock(self.scheduler)

    @property
    def step_limit(self) -> int | None:
        """The step at which the trial is complete: the smaller of budget.max_steps and the scheduler's
        max_t (when the scheduler's clock is the step)."""
        max_t = None if self.time_attr or self.scheduler is None else self.scheduler.max_t
        limits = [v for v in (self.max_steps, max_t) if v is not None]
        return min(limits) if limits else None


class Trial:
    """The handle a training function receives as `trial`.

    `report(step, **metrics)` stores an intermediate report and raises
    `TrialStopped` when the trial must end (the caller need not catch it);
    `should_stop()` asks without reporting.
    """

    def __init__(self, spec: TrialSpec, sink: ReportSink) -> None:
        self._spec = spec
        self._sink = sink
        self.history: dict[str, list[float]] = {}
        self.last_metrics: dict[str, float] = {}
        self.last_step: int | None = spec.resume_step
        self._best_score = math.nan
        self._last_clock: float | None = spec.resume_step if spec.time_attr is None else None
        #: the step of this attempt's last report: steps must increase within an attempt (a retried trial
        #: whose training function starts over without a checkpoint reports its first steps again)
        self._reported_step: int | None = None

    @property
    def number(self) -> int:
        return self._spec.number

    @property
    def config(self) -> Config:
        return self._spec.config

    @property
    def attempt(self) -> int:
        """1 on a trial's first run; more when it resumes (promotion) or is retried (its worker died)."""
        return self._spec.attempt

    @property
    def sweep_name(self) -> str:
        return self._spec.sweep_name

    @property
    def devices(self) -> list[str]:
        """The GPUs this trial holds, as CUDA names them (["2"]; [] for none). In a worker process
        CUDA_VISIBLE_DEVICES is already set to them, so the trial's code sees them as cuda:0, cuda:1, ...;
        with workers="threads" it is not (one process), and the code picks `f"cuda:{trial.devices[0]}"`."""
        return list(self._spec.devices)

    @property
    def resources(self) -> dict[str, float]:
        """What this trial was given, as asked ({"gpu": 1, "cpu": 2}); {} where it asked for nothing."""
        return dict(self._spec.resources)

    @property
    def cpu_threads(self) -> int | None:
        """The thread count its process's BLAS and OpenMP libraries were given (its CPU share), or None."""
        return self._spec.cpu_threads

    @property
    def resume_step(self) -> int | None:
        """The step this trial reached before it paused (None on its first attempt): continue after it."""
        return self._spec.resume_step

    @property
    def checkpoint_path(self) -> str:
        """Where this trial's checkpoint lives: a local folder or an fsspec URL (never the database)."""
        if not self._spec.checkpoint_path:
            raise TrialStopped("this sweep has no checkpoint location; pass checkpoints=... to sweep()")
        return self._spec.checkpoint_path

    @property
    def checkpoint_dir(self) -> Path:
        """This trial's checkpoint folder on the local filesystem (created on first use)."""
        path = self.checkpoint_path
        if "://" in path and not path.startswith("file://"):
            raise ValueError(f"checkpoints live at {path}, not on the local disk; use save_checkpoint/load_checkpoint")
        folder = Path(path.removeprefix("file://"))
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def save_checkpoint(self, state: Any) -> None:
        """Store `state` (anything cloudpickle can write) as this trial's checkpoint, replacing the last."""
        import cloudpickle
        import fsspec

        with fsspec.open(f"{self.checkpoint_path}/checkpoint.pkl", "wb", auto_mkdir=True) as f:
            cloudpickle.dump(state, f)

    def load_checkpoint(self) -> Any:
        """The last state saved with `save_checkpoint`, or None if there is none."""
        import cloudpickle
        import fsspec

        target = f"{self.checkpoint_path}/checkpoint.pkl"
        fs, path = fsspec.core.url_to_fs(target)
        if not fs.exists(path):
            return None
        with fs.open(path, "rb") as f:
            return cloudpickle.load(f)

    def report(self, step: int, **metrics: float) -> None:
        """Record metrics at `step` (an epoch, an iteration); stops the trial if it must end.

        Steps start at 0 or more and increase from one report to the next: schedulers compare trials at
        the same step, and budgets count the last. A step that does not (a loop variable reset, a
        repeated call) fails the trial with a ValueError that names both steps.
        """
        step, values = _checked_report(step, metrics, self._reported_step)
        for name, value in values.items():
            self.history.setdefault(name, []).append(value)
        self.last_metrics.update(values)
        self.last_step = self._reported_step = step
        score = self._score(values)
        stop = self._sink.add_report(self._spec.trial_id, step, values, sweep_id=self._spec.sweep_id, score=score)
        if stop is not None:
            raise TrialStopped(stop)
        clock = float(step) if self._spec.time_attr is None else values.get(self._spec.time_attr)
        if score is not None and self._spec.scheduler is not None and clock is not None:
            self._ask_scheduler(clock, score, self._last_clock)
            self._last_clock = clock
        reached = self._limit_reached(step, clock)
        if reached is not None:
            raise TrialStopped(reached)

    def _score(self, metrics: Mapping[str, float]) -> float | None:
        """The first objective at this report in 'lower is better' form (best so far for *_global)."""
        objective = self._spec.objectives[0]
        if objective.metric not in metrics:
            return None
        value = metrics[objective.metric]
        score = value if objective.direction == "minimize" else -value
        if not math.isnan(score) and (math.isnan(self._best_score) or score < self._best_score):
            self._best_score = score
        return self._best_score if objective.uses_best_reported and not math.isnan(score) else score

    def _ask_scheduler(self, step: float, score: float, previous: float | None) -> None:
        assert self._spec.scheduler is not None
        event = ReportEvent(
            sweep_id=self._spec.sweep_id,
            trial_id=self._spec.trial_id,
            number=self._spec.number,
            bracket=self._spec.bracket,
            step=step,
            score=score,
            best=self._best_score,
            previous_step=previous,
        )
        decision = self._spec.scheduler.on_report(event, self._sink)
        protected = self._spec.min_steps is not None and (self.last_step or 0) < self._spec.min_steps
        if decision.action == Action.STOP and not protected:
            self._sink.request_stop(self._spec.trial_id, decision.reason)
            raise TrialStopped(decision.reason)
        if decision.action == Action.PAUSE and not protected:
            raise TrialPaused(decision.reason)

    def should_stop(self) -> bool:
        """Whether the trial has been asked to stop (or has reached its last step)."""
        limit = self._spec.step_limit
        if limit is not None and self.last_step is not None and self.last_step >= limit:
            return True
        return self._sink.stop_request(self._spec.trial_id) is not None

    def _limit_reached(self, step: int, clock: float | None) -> str | None:
        """Why the trial is complete after its report at `step` (the scheduler's clock at `clock`), or None:
        its last step, the scheduler's max_t on a reported clock, the sweep's max_total_steps."""
        limit = self._spec.step_limit
        if limit is not None and step >= limit:
            return f"reached max_steps={limit}"
        max_t = None if self._spec.scheduler is None else self._spec.scheduler.max_t
        if self._spec.time_attr and max_t is not None and clock is not None and clock >= max_t:
            return f"reached max_steps: {self._spec.time_attr}={clock:g} >= max_t={max_t}"
        budget = self._spec.max_total_steps
        if budget is not None and self._sink.total_steps(self._spec.sweep_id) >= budget:
            return f"sweep stopped: max_total_steps={budget} reached"
        return None


def _checked_report(step: Any, metrics: Mapping[str, Any], previous: int | None) -> tuple[int, dict[str, float]]:
    """A report's step and metrics as the store keeps them (an int; floats), or the error that names what is
    wrong and the fix: a step that is no integer or does not increase, no metric, a metric that is no number."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"trial.report: step must be an integer, got {step!r}")
    _check_step(int(step), previous)
    if not metrics:
        raise TypeError("trial.report: give at least one metric, e.g. trial.report(epoch, val_loss=0.3)")
    values: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"trial.report: metric {name!r} must be a number, got {value!r}")
        try:
            values[name] = float(value)
        except OverflowError:
            raise ValueError(f"trial.report: metric {name!r} is {shown_number(value)}, {TOO_LARGE}") from None
    return int(step), values


def _check_step(step: int, previous: int | None) -> None:
    rule = "each report's step must be greater than the one before (count epochs or iterations from 0 or 1)"
    if step < 0:
        raise ValueError(f"trial.report: step {step} is negative; {rule}")
    if previous is not None and step <= previous:
        raise ValueError(f"trial.report: step {step} is not greater than the previous step {previous}; {rule}")


def wants_trial(train: TrainFn) -> bool:
    """Whether `train` takes the trial handle: `train(config, trial)` or `train(config)`."""
    if not callable(train):
        raise TrialFunctionError(f"train must be a callable, got {train!r}")
    try:
        sig = inspect.signature(train)
    except (TypeError, ValueError):
        return True
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    var_positional = any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())
    optional = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) == 2 or (len(positional) == 1 and (len(optional) >= 2 or var_positional)):
        return True
    if len(positional) == 1:
        return False
    name = getattr(train, "__name__", repr(train))
    raise TrialFunctionError(
        f"training function {name}{sig} must take (config) or (config, trial); "
        "define it as `def train(config, trial): ...`"
    )
