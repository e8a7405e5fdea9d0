"""Progress in the terminal and in the flow's log: a bar while a person watches, a line per trial."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
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
        stored: Sequence[TrialRecord] = (),
        running_adopted: bool = False,
    ) -> None:
        """`stored`: the trials the sweep already holds (a continued sweep); the best so far counts them,
        and a line says what the sweep continues. `running_adopted`: trials left running are watched
        again (flow runs on a work pool) rather than run again."""
        self._name = sweep_name
        self._objective = objectives[0]
        self._logger = logger
        self._best: tuple[float, int] | None = None
        for trial in stored:
            self._consider(trial)
        if stored:
            logger.info("%s", self._continuing(stored, running_adopted))
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
            done = sum(1 for trial in stored if trial.state.is_finished and trial.state != TrialState.FAIL_RECOVERABLE)
            self._task = self._progress.add_task(sweep_name, total=total, completed=done, best=self._best_text())
            self._progress.start()

    def trial_started(self, trial: TrialRecord) -> None:
        return None

    def _consider(self, trial: TrialRecord) -> None:
        """Take `trial` as the best so far if it completed with a better finite value."""
        value = trial.value
        if trial.state != TrialState.COMPLETE or value is None or not math.isfinite(value):
            return
        if self._best is None or self._objective.better(value, self._best[0]):
            self._best = (value, trial.number)

    def _continuing(self, stored: Sequence[TrialRecord], running_adopted: bool) -> str:
        """What a continued sweep starts from: "sweep X: 14 trials stored, 2 interrupted to retry; best ..."."""
        left_running = sum(1 for trial in stored if trial.state == TrialState.RUNNING)
        recoverable = sum(1 for trial in stored if trial.state in (TrialState.FAIL_RECOVERABLE, TrialState.INTERRUPTED))
        paused = sum(1 for trial in stored if trial.state == TrialState.PAUSED)
        parts = [f"sweep {self._name}: {len(stored)} trials stored"]
        if running_adopted and left_running:
            parts.append(f"{left_running} still running on the work pool, watched again")
        interrupted = recoverable + (0 if running_adopted else left_running)
        if interrupted:
            parts.append(f"{interrupted} interrupted to retry")
        if paused:
            parts.append(f"{paused} paused at a rung")
        line = ", ".join(parts)
        best = self._best_text()
        return f"{line}; {best}" if best else line

    def _best_text(self) -> str:
        if self._best is None:
            return ""
        return f"best {self._objective.metric}={self._best[0]:.6g} (trial {self._best[1]})"

    def trial_ended(self, trial: TrialRecord, status: BudgetStatus) -> None:
        self._consider(trial)
        best = self._best_text()
        value = trial.value
        detail = f"{self._objective.metric}={value:.6g}" if value is not None else (trial.reason or "")
        if trial.state == TrialState.FAIL and trial.error:
            detail = trial.error.strip().splitlines()[-1][:200]
        line = " ".join(part for part in (f"trial {trial.number}", trial.state.value, detail) if part)
        if best:
            self._logger.info("%s | %s", line, best)
        else:
            self._logger.info("%s", line)  # no empty "| " before there is a best
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
