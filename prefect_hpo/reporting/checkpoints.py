"""Keep the checkpoints of the k best trials only (ClearML's `save_top_k_tasks_only`).

Checkpoints can be large (a model per trial); a long sweep keeps what a user will retrain from or
deploy, the k best, and removes the rest as soon as a trial falls out of the top k. The store keeps
every trial's row, reports and metrics: only files go.

Only folders the sweep recorded as its own are removed (`CheckpointLayout`): the old shared folder of a
sweep from before per-sweep folders may hold another sweep's checkpoints under the same trial numbers,
so its files are left, and said so once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import fsspec

from prefect_hpo.budget import BudgetStatus
from prefect_hpo.checkpoint_layout import CheckpointLayout
from prefect_hpo.objective import Objective
from prefect_hpo.records import TrialRecord, TrialState

_log = logging.getLogger("prefect_hpo.checkpoints")


class TopKCheckpoints:
    """A reporter that removes the checkpoint folders of finished trials outside the best `k`."""

    def __init__(
        self, layout: CheckpointLayout, objective: Objective, k: int, stored: Sequence[TrialRecord] = ()
    ) -> None:
        """`stored`: the trials a continued sweep already has, so that its earlier trials are ranked too."""
        self._layout, self._objective, self._k = layout, objective, k
        self._finished: dict[int, float | None] = {}  # number -> value (None: no usable value)
        self._removed: set[int] = set()
        self._told_of_legacy = False
        for trial in stored:
            self._note(trial)

    def trial_started(self, trial: TrialRecord) -> None:
        # a resumed or retried trial writes its checkpoint again
        self._finished.pop(trial.number, None)
        self._removed.discard(trial.number)

    def trial_ended(self, trial: TrialRecord, status: BudgetStatus) -> None:
        self._note(trial)
        self._prune()

    def _note(self, trial: TrialRecord) -> None:
        if not trial.state.is_finished or trial.state == TrialState.FAIL_RECOVERABLE:
            return  # a paused trial resumes from its checkpoint; a recoverable one runs again
        usable = trial.state == TrialState.COMPLETE and trial.value is not None and math.isfinite(trial.value)
        self._finished[trial.number] = trial.value if usable else None

    def sweep_ended(self, status: BudgetStatus, reason: str) -> None:
        self._prune()

    def keep(self) -> list[int]:
        """The trial numbers whose checkpoints are kept: the best k finished ones."""
        ranked = sorted(
            (n for n, v in self._finished.items() if v is not None),
            key=lambda n: (self._objective.sort_key(self._finished[n]), n),
        )
        return ranked[: self._k]

    def _prune(self) -> None:
        kept = set(self.keep())
        for number in self._finished:
            if number in kept or number in self._removed:
                continue
            if self._layout.is_legacy(number):
                self._tell_of_legacy()
                continue
            path = self._layout.path(number)
            fs, local = fsspec.core.url_to_fs(path)
            try:
                if fs.exists(local):
                    fs.rm(local, recursive=True)
                self._removed.add(number)
            except OSError as exc:  # a file system hiccup costs disk space, not the sweep
                _log.warning("could not remove the checkpoint of trial %d at %s: %s", number, path, exc)

    def _tell_of_legacy(self) -> None:
        if self._told_of_legacy:
            return
        self._told_of_legacy = True
        _log.info(
            "keep_top_k leaves the checkpoints of trials 0-%d in %s/%s: that folder is from before each sweep "
            "had its own and may hold another sweep's; remove what you do not need yourself",
            self._layout.legacy_below - 1,
            self._layout.root,
            self._layout.legacy_folder,
        )
