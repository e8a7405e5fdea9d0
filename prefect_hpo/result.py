"""What a sweep returns: a plain, serializable snapshot of the store, with tables and rankings.

`SweepResult` holds records, not connections: it can be pickled, passed between
flows, or rebuilt at any time from the store with `load_result(name, storage)`.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from prefect_hpo.budget import Budget, BudgetStatus
from prefect_hpo.checkpoint_layout import CheckpointLayout
from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.objective import Objective, build_objectives, dominates
from prefect_hpo.ranking import ranked
from prefect_hpo.records import Config, Report, TrialRecord, TrialState
from prefect_hpo.storage_refs import resolve
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.store.urls import default_home, mask_url


@dataclass(frozen=True)
class SweepResult:
    """A sweep's trials and how it ended."""

    name: str
    objectives: tuple[Objective, ...]
    records: tuple[TrialRecord, ...]
    budget_status: BudgetStatus
    stop_reason: str | None = None
    storage: str = field(default="", repr=False)
    reports: tuple[Report, ...] = field(default=(), repr=False)
    #: the search space in its stored dict form (`SearchSpace.to_dict()`): which parameters are Int
    space: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: where the trials' checkpoints live (None: the result was read without a checkpoint root)
    checkpoints: CheckpointLayout | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        best = self.best_trial
        return (
            f"SweepResult(name={self.name!r}, trials={len(self.records)}, "
            f"best_value={None if best is None else best.value!r}, storage={mask_url(self.storage)!r})"
        )

    # ---- rankings ---------------------------------------------------------------

    def ranked(self) -> list[TrialRecord]:
        """Complete and early-stopped trials, best first by `prefect_hpo.ranking`'s rule: the first
        objective's value at the highest step each reached, then the higher step, then the number."""
        return ranked(self.records, self.objectives[0])

    def _ranked(self) -> list[TrialRecord]:
        """The COMPLETE trials with finite values of every objective, in the ranking's order."""
        return [
            r
            for r in self.ranked()
            if r.state == TrialState.COMPLETE and r.values and all(math.isfinite(v) for v in r.values)
        ]

    @property
    def best_trial(self) -> TrialRecord | None:
        """The best completed trial by the first objective (None if none completed): the first COMPLETE
        trial of `ranked()`; a trial stopped early may rank ahead of it, but did not run to its end."""
        ranked = self._ranked()
        return ranked[0] if ranked else None

    @property
    def best_config(self) -> Config | None:
        best = self.best_trial
        return None if best is None else dict(best.config)

    @property
    def best_value(self) -> float | None:
        best = self.best_trial
        return None if best is None else best.value

    @property
    def budget(self) -> dict[str, Any]:
        """Limits, used and left per kind of budget."""
        return self.budget_status.as_dict()

    def trials_by_state(self, state: TrialState | str) -> list[TrialRecord]:
        """The trials in `state` (a TrialState or its name, ablator's PRUNED_POOR_PERFORMANCE included)."""
        if isinstance(state, str) and not isinstance(state, TrialState):
            try:
                state = TrialState[state.upper()]
            except KeyError:
                raise PrefectHPOError(
                    f"trials_by_state: {state!r} is not a trial state; use one of {[s.name for s in TrialState]}"
                ) from None
        return [r for r in self.records if r.state == state]

    def top(self, k: int = 5) -> pd.DataFrame:
        """The k best trials as a table, best first, stopped ones included (`ranked()`'s order; `last_step`
        says how far each got)."""
        return self._frame(self.ranked()[:k])

    def pareto_front(self) -> pd.DataFrame:
        """The completed trials no other completed trial dominates, over all objectives."""
        ranked = self._ranked()
        front = [
            r
            for r in ranked
            if not any(dominates(o.values or (), r.values or (), self.objectives) for o in ranked if o is not r)
        ]
        return self._frame(front)

    def checkpoint_path(self, number: int) -> str:
        """Where trial `number` keeps its checkpoint: `<root>/<cleaned name>-<sweep uid>/trial-N` (a folder
        or an fsspec URL; a sweep from before per-sweep folders keeps its first trials' in `<root>/<name>`)."""
        if self.checkpoints is None:
            raise PrefectHPOError(
                f"sweep {self.name!r}: this result has no checkpoint location; read it with "
                "load_result(name, storage, checkpoints=<the folder given to sweep()>)"
            )
        return self.checkpoints.path(number)

    # ---- tables and exports -------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON data (NaN as null): what a flow can return, persist or pass on."""
        best = self.best_trial
        return {
            "name": self.name,
            "storage": mask_url(self.storage),
            "objectives": [o.to_dict() for o in self.objectives],
            "best_trial": None if best is None else best.number,
            "best_config": self.best_config,
            "best_value": self.best_value,
            "stop_reason": self.stop_reason,
            "budget": self.budget,
            "trials": json.loads(self.trials.to_json(orient="records", date_format="iso")),
        }

    @property
    def trials(self) -> pd.DataFrame:
        """One row per trial, in trial order."""
        return self._frame(list(self.records))

    def _frame(self, records: Sequence[TrialRecord]) -> pd.DataFrame:
        return trials_frame(records, self.objectives, self.space)

    def curves(self) -> pd.DataFrame:
        """Every trial's intermediate reports as a long table: number, state, step, one column per metric."""
        states = {r.number: r.state.value for r in self.records}
        rows = [{"number": r.number, "state": states.get(r.number), "step": r.step, **r.metrics} for r in self.reports]
        frame = pd.DataFrame(rows)
        if frame.empty:
            return pd.DataFrame(columns=["number", "state", "step"])
        return frame.sort_values(["number", "step"], kind="stable").reset_index(drop=True)

    def get_training_curves(
        self, filename: str | Path | None = None, plot: bool = False, metric: str | None = None
    ) -> pd.DataFrame:
        """AutoGluon's name for the training curves: the long table of `curves()`; with `plot` (or a
        `filename`) they are also drawn, one line per trial, into `filename` (default
        `<sweep>-curves.png` here)."""
        if plot or filename is not None:
            self.plot_curves(filename if filename is not None else f"{self.name}-curves.png", metric)
        return self.curves()

    def plot_curves(self, path: str | Path, metric: str | None = None) -> Path:
        """Draw the training curves of `metric` (default: the first objective) to a PNG at `path`."""
        from prefect_hpo.reporting.plots import plot_training_curves

        chosen = metric or self.objectives[0].metric
        return plot_training_curves(self.curves(), chosen, path, title=f"{self.name}: {chosen} per step")

    def to_csv(self, path: str | Path) -> Path:
        out = Path(path)
        self.trials.to_csv(out, index=False)
        return out

    def to_parquet(self, path: str | Path) -> Path:
        out = Path(path)
        frame = self.trials
        # Parquet needs one type per column; parameters may mix types across trials.
        for column in frame.columns:
            if column.startswith("params_") and frame[column].dropna().map(type).nunique() > 1:
                frame[column] = frame[column].map(lambda v: None if v is None else str(v))
        try:
            frame.to_parquet(out, index=False)
        except ImportError:  # pandas found no Parquet engine: pyarrow is an extra, not a dependency
            raise PrefectHPOError(
                "to_parquet needs pyarrow: pip install 'prefect-hpo[parquet]' (or use to_csv, which needs nothing)"
            ) from None
        return out


def trials_frame(
    records: Sequence[TrialRecord], objectives: Sequence[Objective], space: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Records as a DataFrame: number, state, one column per objective, params_*, timings, errors.

    The columns of `space`'s Int parameters, last_step and duplicate_of hold pandas' nullable integers
    ("Int64"): a conditional Int, absent from some trials, would otherwise come out as floats (3.0)."""
    param_names: list[str] = []
    for r in records:
        for name in r.config:
            if name not in param_names:
                param_names.append(name)
    rows = []
    for r in records:
        row: dict[str, Any] = {"number": r.number, "state": r.state.value}
        for i, obj in enumerate(objectives):
            row[obj.metric] = r.values[i] if r.values and i < len(r.values) else None
        for name in param_names:
            row[f"params_{name}"] = r.config.get(name)
        row.update(
            last_step=r.last_step,
            duration=r.duration,
            started_at=r.started_at,
            finished_at=r.finished_at,
            attempt=r.attempt,
            error=r.error,
            reason=r.reason,
            duplicate_of=r.duplicate_of,
            worker=r.worker,
            devices=",".join(r.devices) or None,
            cpu_threads=r.cpu_threads,
            task_run_id=r.task_run_id,
        )
        rows.append(row)
    columns = ["number", "state", *[o.metric for o in objectives], *[f"params_{n}" for n in param_names]]
    columns += ["last_step", "duration", "started_at", "finished_at", "attempt", "error", "reason"]
    columns += ["duplicate_of", "worker", "devices", "cpu_threads", "task_run_id"]
    frame = pd.DataFrame(rows, columns=columns)
    for column in ["last_step", "duplicate_of", "cpu_threads", *[f"params_{n}" for n in _int_params(space or {})]]:
        if column in frame.columns:
            with contextlib.suppress(TypeError, ValueError):  # a value that is not a whole number: left as it is
                frame[column] = frame[column].astype("Int64")
    return frame


def _int_params(space: Mapping[str, Any]) -> list[str]:
    """The names of the Int parameters of a space in its stored dict form."""
    return [name for name, entry in space.items() if isinstance(entry, Mapping) and entry.get("type") == "int"]


def result_from_store(
    store: SqlTrialStore, sweep_id: int, stop_reason: str | None = None, *, checkpoint_root: str | None = None
) -> SweepResult:
    """Snapshot one sweep of an open store (with its checkpoint folders under `checkpoint_root`, if given)."""
    row = store.sweep(sweep_id)
    budget = Budget.from_dict(row["budget"])
    return SweepResult(
        name=row["name"],
        objectives=build_objectives(row["objectives"]),
        records=tuple(store.trials(sweep_id)),
        budget_status=BudgetStatus(budget, store.usage(sweep_id, now=row["finished_at"])),
        stop_reason=stop_reason if stop_reason is not None else row["stop_reason"],
        storage=store.url,
        reports=tuple(store.reports(sweep_id)),
        space=row["space"] or {},
        checkpoints=CheckpointLayout.of_sweep(checkpoint_root, row) if checkpoint_root else None,
    )


def load_result(name: str, storage: str | None = None, checkpoints: str | None = None) -> SweepResult:
    """The current state of sweep `name` in `storage`, named as `sweep()` takes it (a URL, a SQLite path,
    "env:NAME" or "block:NAME"; default: the prefect_hpo home's SQLite file). `checkpoints`: the folder
    given to `sweep()`, for `checkpoint_path` (default: sweep()'s, ~/.prefect_hpo/checkpoints)."""
    store = SqlTrialStore(resolve(storage))
    try:
        root = checkpoints or str(default_home() / "checkpoints")
        return result_from_store(store, store.sweep_id(name), checkpoint_root=root)
    except PrefectHPOError:
        raise
    finally:
        store.close()
