"""A sweep that runs in the background, and the handle that watches and steers it from a notebook or script.

The powers of ClearML's HyperParameterOptimizer, split as we split things: the
sweep is the same `sweep()` flow, run in a background thread (with a copy of the
caller's Prefect context); the handle reads everything it reports from the trial
store, and steers the loop through one narrow hook, `stop_reason()`, which the
loop asks between events (a stop, or a time limit changed while it runs).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pandas as pd

from prefect_hpo.api import sweep
from prefect_hpo.arguments import is_number
from prefect_hpo.budget import Budget
from prefect_hpo.errors import PrefectHPOError, StoreError
from prefect_hpo.executors.main_script import skip_top_level_sweep
from prefect_hpo.names import default_sweep_name
from prefect_hpo.objective import Objective, build_objectives
from prefect_hpo.ranking import ordered
from prefect_hpo.records import TrialRecord, TrialState
from prefect_hpo.reporting.callback import TrialCallback
from prefect_hpo.result import SweepResult, load_result
from prefect_hpo.space import SearchSpace
from prefect_hpo.storage_refs import resolve
from prefect_hpo.store.sql import SqlTrialStore


class SweepController:
    """The handle of a sweep running in a background thread (see `start_sweep`)."""

    def __init__(
        self,
        name: str,
        storage: str,
        objectives: tuple[Objective, ...],
        budget: Budget,
        loop_time_limit: float | None = None,
    ) -> None:
        """`loop_time_limit`: a wall-time limit the loop also holds (the budget's only limit), which
        `set_time_limit` therefore cannot pass."""
        self.name, self.storage, self.objectives = name, storage, objectives
        self._time_limit = budget.time_limit
        self._loop_time_limit = loop_time_limit
        self._stop_requested: str | None = None
        self._started = time.monotonic()
        self._ended: float | None = None
        self._result: SweepResult | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self, run_sweep: Callable[[], SweepResult]) -> None:
        """Call `run_sweep` in a background thread, in a copy of the caller's context; its result (or error)
        is kept for `result()`."""
        context = contextvars.copy_context()  # Prefect's settings (e.g. the server's URL) live in context variables

        def target() -> None:
            try:
                self._result = run_sweep()
            except BaseException as exc:  # noqa: BLE001 - kept for result() to raise in the caller's thread
                self._error = exc
            finally:
                self._ended = time.monotonic()

        self._thread = threading.Thread(target=context.run, args=(target,), name=f"sweep-{self.name}", daemon=True)
        self._thread.start()

    # ---- what the loop asks ------------------------------------------------------------

    def stop_reason(self) -> str | None:
        """Why the sweep must stop now (stop() was called, or the time limit set here passed), or None."""
        if self._stop_requested is not None:
            return self._stop_requested
        if self.reached_time_limit():
            return f"time_limit of {self._time_limit:g}s reached"
        return None

    # ---- steering ----------------------------------------------------------------------

    def stop(self, reason: str = "stopped by the controller", timeout: float | None = None) -> bool:
        """Stop the sweep: running trials are stopped (PRUNED, with `reason`), every result is kept.
        Waits up to `timeout` seconds for it to end; returns whether it has."""
        self._stop_requested = reason
        return self.wait(timeout)

    def set_time_limit(self, seconds: float | None) -> None:
        """Change the sweep's wall-time limit while it runs (counted from its start; None: no limit)."""
        if seconds is not None and not (is_number(seconds) and seconds > 0):
            raise PrefectHPOError(f"set_time_limit: give a positive number of seconds or None, got {seconds!r}")
        held = self._loop_time_limit
        if held is not None and (seconds is None or seconds > held):
            raise PrefectHPOError(
                f"set_time_limit: budget.time_limit={held:g}s is this sweep's only limit, so it cannot be raised; "
                "give the budget another limit too (e.g. max_trials) to change the time limit freely"
            )
        self._time_limit = seconds

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds (None: until it ends) for the sweep to end; returns whether it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.is_running()

    def result(self, timeout: float | None = None) -> SweepResult:
        """The sweep's result once it has ended; raises what the sweep raised (e.g. TooManyFailedTrials)."""
        if not self.wait(timeout):
            raise TimeoutError(f"sweep {self.name!r} is still running after {timeout}s")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    # ---- watching ----------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def elapsed(self) -> float:
        """Seconds since the sweep started (until it ended, once it has)."""
        return (self._ended or time.monotonic()) - self._started

    def reached_time_limit(self) -> bool:
        return self._time_limit is not None and self.elapsed() >= self._time_limit

    def snapshot(self) -> SweepResult | None:
        """The sweep as the store holds it now (None before its first write)."""
        try:
            return load_result(self.name, self.storage)
        except StoreError:
            return None

    def top(self, k: int = 5) -> pd.DataFrame:
        """The k best completed trials so far, best first (read from the store)."""
        now = self.snapshot()
        return pd.DataFrame() if now is None else now.top(k)

    def top_details(self, k: int = 5, all_metrics: bool = False, only_completed: bool = True) -> list[dict[str, Any]]:
        """The k best trials as dicts: number, state, objective value, config and metrics (the objectives only,
        or with `all_metrics` every metric the trial returned or last reported). Without `only_completed`,
        every trial in `prefect_hpo.ranking.ordered`'s order: stopped trials ranked with the completed ones
        by their value at the step they reached, failed ones after them."""
        now = self.snapshot()
        if now is None:
            return []
        # the one ranking of every view (prefect_hpo.ranking): stopped trials by their value where they stopped
        everything = ordered(now.records, self.objectives[0])
        chosen = [r for r in everything if r.state == TrialState.COMPLETE] if only_completed else everything
        out = []
        for r in chosen[:k]:
            values = {o.metric: v for o, v in zip(self.objectives, r.values or (), strict=False)}
            metrics = {**r.metrics, **values} if all_metrics else values
            out.append(
                {"number": r.number, "state": r.state.value, "value": r.value, "config": r.config, "metrics": metrics}
            )
        return out

    def active_trials(self) -> list[TrialRecord]:
        """The trials running now (from the store)."""
        store = SqlTrialStore(self.storage)
        try:
            return store.trials(store.sweep_id(self.name), [TrialState.RUNNING])
        except StoreError:
            return []
        finally:
            store.close()


def start_sweep(
    train: Callable[..., Any],
    space: Any,
    objective: Any = "loss",
    strategy: Any = "tpe",
    budget: Budget | None = None,
    storage: str | None = None,
    name: str | None = None,
    *,
    on_trial_complete: TrialCallback | None = None,
    **options: Any,
) -> SweepController:
    """Start `sweep(...)` in a background thread and return its controller at once.

    Takes what `sweep()` takes. Bad input is refused here, before the thread starts.
    """
    skip_top_level_sweep()  # as in sweep(): the fork server loading this script starts no sweep
    limits = budget if budget is not None else Budget()
    url = resolve(storage)  # the handle reads the store itself; sweep() is given `storage` as the caller named it
    sweep_name = name if name is not None else default_sweep_name(train)
    if options.get("fork"):  # the handle must watch the sweep under the name the fork will run as
        store = SqlTrialStore(url)
        try:
            objectives = [o.to_dict() for o in build_objectives(objective)]
            sweep_name = store.fork_name(sweep_name, SearchSpace.build(space).to_dict(), objectives)
        finally:
            store.close()
    # The controller owns the wall-time limit, so that set_time_limit() can also extend it; the loop keeps
    # it only where it is the budget's one limit (a budget must end the sweep on its own).
    others = (limits.max_trials, limits.trials_per_run, limits.compute_time_limit, limits.max_total_steps)
    for_loop = replace(limits, time_limit=None) if any(v is not None for v in others) else limits
    controller = SweepController(sweep_name, url, build_objectives(objective), limits, for_loop.time_limit)

    def run(validate_only: bool) -> SweepResult:
        return sweep(
            train,
            space,
            objective,
            strategy,
            for_loop,
            storage,
            sweep_name,
            on_trial_complete=on_trial_complete,
            stop_check=controller.stop_reason,
            validate_only=validate_only,
            **options,
        )

    run(validate_only=True)  # bad input is refused here, in the caller's thread, before anything runs
    controller.start(lambda: run(validate_only=False))
    return controller
