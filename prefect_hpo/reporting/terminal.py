"""Progress in the terminal and in the flow's log: a bar while a person watches, a line per trial."""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from prefect_hpo.budget import BudgetStatus
from prefect_hpo.objective import Objective
from prefect_hpo.records import TrialRecord, TrialState


class TerminalReporter:
    """Logs each trial's end with the best so far, and draws a progress bar on a terminal."""

    def __init__(
        self,
        sweep_name: str,
        objectives: tuple[Objective, ...],
        logger: logging.Logger | logging.LoggerAdapter[Any],
        total: int | None,
        show_bar: bool | None = None,
    ) -> None:
        self._name = sweep_name
        self._objective = objectives[0]
        self._logger = logger
        self._best: tuple[float, int] | None = None
        self._progress: Progress | None = None
        if show_bar if show_bar is not None else sys.stderr.isatty():
            self._progress = Progress(
                TextColumn(f"[bold]{sweep_name}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[best]}"),
                transient=False,
            )
            self._task = self._progress.add_task(sweep_name, total=total, best="")
            self._progress.start()

    def trial_started(self, trial: TrialRecord) -> None:
        return None

    def trial_ended(self, trial: TrialRecord, status: BudgetStatus) -> None:
        value = trial.value
        finite = trial.state == TrialState.COMPLETE and value is not None and math.isfinite(value)
        if finite and (self._best is None or self._objective.better(value, self._best[0])):  # type: ignore[arg-type]
            self._best = (value, trial.number)  # type: ignore[assignment]
        best = (
            "" if self._best is None else f"best {self._objective.metric}={self._best[0]:.6g} (trial {self._best[1]})"
        )
        detail = f"{self._objective.metric}={value:.6g}" if value is not None else (trial.reason or "")
        if trial.state == TrialState.FAIL and trial.error:
            detail = trial.error.strip().splitlines()[-1][:200]
        self._logger.info("trial %d %s %s | %s", trial.number, trial.state.value, detail, best)
        if self._progress is not None:
            self._progress.update(self._task, completed=status.usage.trials_finished, best=best)

    def sweep_ended(self, status: BudgetStatus, reason: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=status.usage.trials_finished)
            self._progress.stop()
        self._logger.info(
            "sweep %s ended: %s (%d trials finished, %d failed)",
            self._name,
            reason,
            status.usage.trials_finished,
            status.usage.trials_failed,
        )
