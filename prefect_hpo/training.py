"""Running a training function: one trial to its end, described as an `Outcome`.

`run_training` is what every executor calls, in a thread or in a worker process:
it calls `train(config, trial)`, turns whatever happens (a value, a dict, an
exception, a stop, NaN) into an `Outcome`, and never raises. The parent side
records that outcome in the store.

That includes what a training function can do to end more than its trial: `sys.exit()` and a
KeyboardInterrupt of its own are its trial's FAIL, as is a result no float can hold (`10**400`). A
KeyboardInterrupt that may be a person's Ctrl-C (one in a process's main thread while Python handles
SIGINT: a trial flow run on a work pool) is not the trial's to keep: it goes on up.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass

from prefect_hpo.errors import ObjectiveError, StoreError, TrialPaused, TrialStopped
from prefect_hpo.objective import objective_values
from prefect_hpo.records import Outcome, TrialState, is_interrupt_request
from prefect_hpo.trial import ReportSink, TrainFn, Trial, TrialSpec
from prefect_hpo.trial_result import result_metrics


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class RunEnd:
    """What every outcome of one run of a training function carries: the trial's last step, how long the
    run took, and the worker it ran on."""

    last_step: int | None
    duration: float
    worker: str
    devices: tuple[str, ...] = ()
    cpu_threads: int | None = None

    @classmethod
    def of(cls, trial: Trial, start: float) -> RunEnd:
        """The end of `trial`'s run, now (`start`: `time.perf_counter()` when it began)."""
        return cls(
            last_step=trial.last_step,
            duration=time.perf_counter() - start,
            worker=worker_id(),
            devices=tuple(trial.devices),
            cpu_threads=trial.cpu_threads,
        )

    def outcome(
        self,
        state: TrialState,
        *,
        values: tuple[float, ...] | None = None,
        metrics: dict[str, float] | None = None,
        error: str | None = None,
        reason: str | None = None,
    ) -> Outcome:
        """The run's outcome in `state`."""
        return Outcome(
            state=state,
            values=values,
            metrics={} if metrics is None else metrics,
            last_step=self.last_step,
            error=error,
            reason=reason,
            duration=self.duration,
            worker=self.worker,
            devices=self.devices,
            cpu_threads=self.cpu_threads,
        )


def run_training(train: TrainFn, spec: TrialSpec, sink: ReportSink) -> Outcome:
    """Run one trial to its end and describe how it ended; never raises."""
    trial = Trial(spec, sink)
    start = time.perf_counter()
    stopped: str | None = None
    try:
        result = train(spec.config, trial) if spec.pass_trial else train(spec.config)
    except TrialPaused as pause:
        values = objective_values(spec.objectives, dict(trial.last_metrics), trial.history)
        return RunEnd.of(trial, start).outcome(
            TrialState.PAUSED, values=values, metrics=trial.last_metrics, reason=pause.reason
        )
    except TrialStopped as stop:
        if is_interrupt_request(stop.reason):  # the sweep was interrupted: this trial runs again on resume
            return RunEnd.of(trial, start).outcome(
                TrialState.INTERRUPTED, metrics=trial.last_metrics, reason=stop.reason
            )
        stopped, result = stop.reason, None
    except StoreError as exc:
        # The store failed under trial.report (full, unreachable past its outage timeout): not the
        # trial's fault, so it runs again once the store is back (if the store takes even this record;
        # otherwise it stays RUNNING and the next run of the sweep reconciles it the same way).
        return RunEnd.of(trial, start).outcome(
            TrialState.FAIL_RECOVERABLE, error=f"the trial store failed while the trial reported: {exc}"
        )
    except Exception as exc:  # noqa: BLE001 - any error of user code is recorded on the trial, not raised
        return RunEnd.of(trial, start).outcome(
            TrialState.FAIL, metrics=trial.last_metrics, error=traceback.format_exc(), reason=_out_of_memory(exc, spec)
        )
    except (SystemExit, KeyboardInterrupt) as exc:
        if isinstance(exc, KeyboardInterrupt) and _may_be_ctrl_c():
            raise
        return RunEnd.of(trial, start).outcome(
            TrialState.FAIL, metrics=trial.last_metrics, error=traceback.format_exc() + not_an_exit(exc)
        )
    return _returned_outcome(result, stopped, spec, trial, RunEnd.of(trial, start))


def _returned_outcome(result: object, stopped: str | None, spec: TrialSpec, trial: Trial, end: RunEnd) -> Outcome:
    """How a trial ended whose training function returned `result` (None when it was stopped: `stopped`
    says why): COMPLETE, or PRUNED when a scheduler or the sweep stopped it early, or FAIL when there is no
    finite objective value to keep."""
    try:
        final = dict(trial.last_metrics) if result is None else result_metrics(result, spec.objectives)
        values = objective_values(spec.objectives, final, trial.history)
    except ObjectiveError as exc:
        if stopped is not None and not trial.history:
            return end.outcome(TrialState.PRUNED, reason=stopped)
        return end.outcome(TrialState.FAIL, metrics=trial.last_metrics, error=str(exc), reason=stopped)
    bad = [(o.metric, v) for o, v in zip(spec.objectives, values, strict=True) if not math.isfinite(v)]
    if bad:
        metric, value = bad[0]
        error = f"objective {metric!r} is {value}, not a finite number"
        return end.outcome(TrialState.FAIL, values=values, metrics=final, error=error, reason=stopped)
    if stopped is None or stopped.startswith("reached max_steps"):
        return end.outcome(TrialState.COMPLETE, values=values, metrics=final, reason=stopped)
    return end.outcome(TrialState.PRUNED, values=values, metrics=final, reason=stopped)


def _out_of_memory(exc: Exception, spec: TrialSpec) -> str | None:
    """The reason a trial failed for lack of GPU memory ("out of GPU memory on device 2"), else None: PyTorch's
    torch.cuda.OutOfMemoryError, and the "CUDA out of memory" / "CUDA_ERROR_OUT_OF_MEMORY" of other frameworks."""
    text = f"{type(exc).__name__}: {exc}"
    if type(exc).__name__ != "OutOfMemoryError" and "CUDA out of memory" not in text and "OUT_OF_MEMORY" not in text:
        return None
    devices = ", ".join(spec.devices) if spec.devices else "its GPU"
    fix = "ask for a larger share (resources={'gpu': ...}) or use a smaller batch"
    return f"out of GPU memory on device {devices}: {fix}"


def not_an_exit(exc: BaseException) -> str:
    """The line that says a training function's sys.exit() or KeyboardInterrupt ended only its trial."""
    if isinstance(exc, SystemExit):
        called = "" if exc.code is None else repr(exc.code)
        return (
            f"the training function called sys.exit({called}); a trial cannot end the sweep: "
            "return the trial's result, or raise an exception to fail it"
        )
    if isinstance(exc, KeyboardInterrupt):
        return (
            f"the training function raised KeyboardInterrupt{f': {exc}' if str(exc) else ''}; a trial cannot "
            "interrupt the sweep (a Ctrl-C to the sweep's process does): raise another exception to fail it"
        )
    return (
        f"the training function raised {type(exc).__name__}, which is no Exception; it ended only its trial: "
        "raise an Exception to fail a trial"
    )


def _may_be_ctrl_c() -> bool:
    """Whether a KeyboardInterrupt here may be a person's Ctrl-C rather than the training function's own.

    Python raises one for SIGINT only in the main thread, and only while a Python handler takes SIGINT. A
    trial thread is never the main thread, and a trial's worker process ignores SIGINT (`follow_parent`):
    there, every KeyboardInterrupt is the training function's. A trial flow run on a work pool runs its
    training in its main thread with Python's handler: there a KeyboardInterrupt may be a real Ctrl-C."""
    return threading.current_thread() is threading.main_thread() and callable(signal.getsignal(signal.SIGINT))
