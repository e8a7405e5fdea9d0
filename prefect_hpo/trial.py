"""The running trial: the handle the training function reports through, and the code that runs it.

`run_training` is what every executor calls, in a thread or in a worker process:
it calls `train(config, trial)`, turns whatever happens (a value, a dict, an
exception, a stop, NaN) into an `Outcome`, and never raises. The parent side
records that outcome in the store.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
import socket
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prefect_hpo.errors import ObjectiveError, StoreError, TrialFunctionError, TrialPaused, TrialStopped
from prefect_hpo.objective import Objective, objective_values
from prefect_hpo.records import Config, Outcome, TrialState
from prefect_hpo.schedulers.base import Action, ReportEvent, Scheduler, SchedulerStore

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
    checkpoint_root: str | None = None
    max_total_steps: int | None = None

    @property
    def time_attr(self) -> str | None:
        """The reported metric the scheduler reads as its clock (None: the report's step)."""
        return getattr(self.scheduler, "time_attr", None)

    @property
    def step_limit(self) -> int | None:
        """The step at which the trial is complete: the smaller of budget.max_steps and the scheduler's
        max_t (when the scheduler's clock is the step)."""
        max_t = None if self.time_attr else getattr(self.scheduler, "max_t", None)
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
    def resume_step(self) -> int | None:
        """The step this trial reached before it paused (None on its first attempt): continue after it."""
        return self._spec.resume_step

    @property
    def checkpoint_path(self) -> str:
        """Where this trial's checkpoint lives: a local folder or an fsspec URL (never the database)."""
        if not self._spec.checkpoint_root:
            raise TrialStopped("this sweep has no checkpoint location; pass checkpoints=... to sweep()")
        return checkpoint_path(self._spec.checkpoint_root, self._spec.sweep_name, self._spec.number)

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
        """Record metrics at `step` (an epoch, an iteration); stops the trial if it must end."""
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise TypeError(f"trial.report: step must be an integer, got {step!r}")
        if not metrics:
            raise TypeError("trial.report: give at least one metric, e.g. trial.report(epoch, val_loss=0.3)")
        clean: dict[str, float] = {}
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"trial.report: metric {name!r} must be a number, got {value!r}")
            clean[name] = float(value)
            self.history.setdefault(name, []).append(float(value))
        self.last_metrics.update(clean)
        self.last_step = int(step)
        score = self._score(clean)
        stop = self._sink.add_report(self._spec.trial_id, int(step), clean, sweep_id=self._spec.sweep_id, score=score)
        if stop is not None:
            raise TrialStopped(stop)
        clock = float(step) if self._spec.time_attr is None else clean.get(self._spec.time_attr)
        if score is not None and self._spec.scheduler is not None and clock is not None:
            self._ask_scheduler(clock, score, self._last_clock)
            self._last_clock = clock
        limit = self._spec.step_limit
        if limit is not None and step >= limit:
            raise TrialStopped(f"reached max_steps={limit}")
        max_t = getattr(self._spec.scheduler, "max_t", None)
        if self._spec.time_attr and max_t is not None and clock is not None and clock >= max_t:
            raise TrialStopped(f"reached max_steps: {self._spec.time_attr}={clock:g} >= max_t={max_t}")
        budget = self._spec.max_total_steps
        if budget is not None and self._sink.total_steps(self._spec.sweep_id) >= budget:
            raise TrialStopped(f"sweep stopped: max_total_steps={budget} reached")

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


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def checkpoint_path(root: str, sweep_name: str, number: int) -> str:
    """Where trial `number` of a sweep keeps its checkpoint under `root` (a folder or an fsspec URL)."""
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in sweep_name)
    return f"{root.rstrip('/')}/{name}/trial-{number}"


def run_training(train: TrainFn, spec: TrialSpec, sink: ReportSink) -> Outcome:
    """Run one trial to its end and describe how it ended; never raises."""
    trial = Trial(spec, sink)
    start = time.perf_counter()
    stopped: str | None = None
    try:
        result = train(spec.config, trial) if spec.pass_trial else train(spec.config)
    except TrialPaused as pause:
        values = objective_values(spec.objectives, dict(trial.last_metrics), trial.history)
        return Outcome(
            state=TrialState.PAUSED,
            values=values,
            metrics=trial.last_metrics,
            last_step=trial.last_step,
            reason=pause.reason,
            duration=time.perf_counter() - start,
            worker=worker_id(),
        )
    except TrialStopped as stop:
        stopped, result = stop.reason, None
    except StoreError as exc:
        # The store failed under trial.report (full, unreachable past its outage timeout): not the
        # trial's fault, so it runs again once the store is back (if the store takes even this record;
        # otherwise it stays RUNNING and the next run of the sweep reconciles it the same way).
        return Outcome(
            state=TrialState.FAIL_RECOVERABLE,
            last_step=trial.last_step,
            error=f"the trial store failed while the trial reported: {exc}",
            duration=time.perf_counter() - start,
            worker=worker_id(),
        )
    except Exception:  # noqa: BLE001 - any error of user code is recorded on the trial, not raised
        return Outcome(
            state=TrialState.FAIL,
            metrics=trial.last_metrics,
            last_step=trial.last_step,
            error=traceback.format_exc(),
            duration=time.perf_counter() - start,
            worker=worker_id(),
        )
    duration = time.perf_counter() - start
    base = {"last_step": trial.last_step, "duration": duration, "worker": worker_id()}
    try:
        final = dict(trial.last_metrics) if result is None else _result_metrics(result, spec.objectives)
        values = objective_values(spec.objectives, final, trial.history)
    except ObjectiveError as exc:
        if stopped is not None and not trial.history:
            return Outcome(state=TrialState.PRUNED, reason=stopped, **base)  # type: ignore[arg-type]
        return Outcome(state=TrialState.FAIL, metrics=trial.last_metrics, error=str(exc), reason=stopped, **base)  # type: ignore[arg-type]
    bad = [(o.metric, v) for o, v in zip(spec.objectives, values, strict=True) if not math.isfinite(v)]
    if bad:
        metric, value = bad[0]
        error = f"objective {metric!r} is {value}, not a finite number"
        return Outcome(state=TrialState.FAIL, values=values, metrics=final, error=error, reason=stopped, **base)  # type: ignore[arg-type]
    if stopped is None or stopped.startswith("reached max_steps"):
        return Outcome(state=TrialState.COMPLETE, values=values, metrics=final, reason=stopped, **base)  # type: ignore[arg-type]
    return Outcome(state=TrialState.PRUNED, values=values, metrics=final, reason=stopped, **base)  # type: ignore[arg-type]


def _result_metrics(result: Any, objectives: tuple[Objective, ...]) -> dict[str, float]:
    """The metrics a training function returned: a bare number or a dict of numbers."""
    if isinstance(result, numbers.Real) and not isinstance(result, bool):
        if len(objectives) > 1:
            raise ObjectiveError(
                f"the trial returned a bare number, but there are {len(objectives)} objectives; "
                f"return a dict with {[o.metric for o in objectives]}"
            )
        return {objectives[0].metric: float(result)}
    if isinstance(result, Mapping):
        out: dict[str, float] = {}
        for key, value in result.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ObjectiveError(
                    f"the trial returned {key!r}: {value!r}, which is not a number; "
                    "return only numbers in the result dict"
                )
            out[str(key)] = float(value)
        return out
    raise ObjectiveError(
        f"the trial returned {type(result).__name__} {result!r:.80}; return a number or a dict of numbers"
    )
