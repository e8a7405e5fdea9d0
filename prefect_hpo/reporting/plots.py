"""Plots a person would rather look at than read, drawn with matplotlib to PNG files.

Optimization history, parameter importance and parallel coordinates are Optuna's
own matplotlib plots, drawn over an in-memory Optuna study rebuilt from the
store's records (we add nothing to how Optuna draws or computes importances).
Training curves are ours: Optuna's intermediate-value plot has no notion of
where a trial was stopped, which is what a person looks for in an ASHA sweep.
"""

from __future__ import annotations

import importlib
import math
import multiprocessing
import multiprocessing.connection
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from prefect_hpo.objective import Objective
from prefect_hpo.records import TrialRecord, TrialState
from prefect_hpo.space import SearchSpace

#: The plots `draw_plots` makes, by file stem.
PLOT_NAMES = ("history", "importance", "parallel", "curves")


def study_of(records: Sequence[TrialRecord], space: SearchSpace, objectives: Sequence[Objective]) -> Any:
    """An in-memory Optuna study holding the completed trials (for Optuna's plots and importances)."""
    import optuna

    if optuna.logging.get_verbosity() <= optuna.logging.INFO:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # Optuna logs every study it creates at INFO
    study = optuna.create_study(directions=[o.direction for o in objectives])
    for r in records:
        values = list(r.values or ())
        if r.state != TrialState.COMPLETE or len(values) != len(objectives) or not all(map(math.isfinite, values)):
            continue
        study.add_trial(
            optuna.trial.create_trial(
                params=space.to_optuna_params(r.config),
                distributions=space.distributions(r.config),
                values=values,
            )
        )
    return study


def prepare_drawing_process() -> None:
    """Make this (helper) process ready to draw: leave with the parent that started it, so that a killed
    sweep does not leave it behind, then import what drawing needs."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        sentinel = parent.sentinel

        def exit_with_parent() -> None:
            multiprocessing.connection.wait([sentinel])
            os._exit(0)

        threading.Thread(target=exit_with_parent, daemon=True, name="hpo-plot-parent-watch").start()
    import matplotlib

    matplotlib.use("Agg")
    importlib.import_module("optuna.visualization.matplotlib")
    importlib.import_module("optuna.importance")


def draw_plots(
    records: Sequence[TrialRecord],
    space: SearchSpace,
    objectives: Sequence[Objective],
    curves: pd.DataFrame,
    folder: str | Path,
) -> dict[str, Path]:
    """Draw every plot the sweep's data allows into `folder`; returns name -> PNG path.

    History needs one completed trial, importance and parallel coordinates two and a searched
    parameter, training curves an intermediate report; plots without enough data are left out.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import optuna.visualization.matplotlib as ovm

    study = study_of(records, space, objectives)
    complete = len(study.trials)
    metric = objectives[0].metric
    target: dict[str, Any] = {"target": lambda t: t.values[0], "target_name": metric} if len(objectives) > 1 else {}
    target_name = {"target_name": metric}
    out: dict[str, Path] = {}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    searched = bool(space.distributions({name: None for name in space.params}))
    makers: list[tuple[str, int, Callable[[], Any]]] = [
        ("history", 1, lambda: ovm.plot_optimization_history(study, **(target or target_name))),
        (
            "importance",
            2,
            lambda: ovm.plot_param_importances(study, evaluator=_evaluator(complete), **(target or target_name)),
        ),
        ("parallel", 2, lambda: ovm.plot_parallel_coordinate(study, **(target or target_name))),
    ]
    for name, needs, make in makers:
        if complete < needs or (name != "history" and not searched):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                axes = make()
            except (ValueError, RuntimeError, ZeroDivisionError):
                # e.g. importances of trials that all scored the same: nothing to draw, the rest still is
                continue
        out[name] = _save(axes, folder / f"{name}.png")
    if metric in curves.columns and not curves[metric].dropna().empty:
        out["curves"] = plot_training_curves(curves, metric, folder / "curves.png")
        if any(r.lineage and "member" in r.lineage for r in records):
            out["lineage"] = plot_lineage(records, curves, metric, folder / "lineage.png")
    return out


def plot_lineage(records: Sequence[TrialRecord], curves: pd.DataFrame, metric: str, path: str | Path) -> Path:
    """Population-based training: each member's curve, one colour per member, and a dashed jump where a
    member took over another's checkpoint and configuration (labelled with the donor's trial number)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10")
    by_number = {r.number: r for r in records}
    segments: dict[int, pd.DataFrame] = {
        int(n): rows.sort_values("step")  # type: ignore[arg-type]
        for n, rows in curves.dropna(subset=[metric]).groupby("number")
    }
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    seen: set[int] = set()
    for number, rows in segments.items():
        lineage = by_number[number].lineage if number in by_number else None
        if not lineage or "member" not in lineage:
            continue
        member = int(lineage["member"])
        colour = colours(member % 10)
        ax.plot(
            rows["step"], rows[metric], color=colour, lw=1.2, label=f"member {member}" if member not in seen else None
        )
        seen.add(member)
        parent, donor = lineage.get("parent"), lineage.get("exploited")
        if parent is not None and parent in segments:  # where this trial took over: dashed from another member
            last = segments[parent].iloc[-1]
            style = "--" if donor is not None else "-"
            ax.plot([last["step"], rows["step"].iloc[0]], [last[metric], rows[metric].iloc[0]], ls=style, color=colour)
            if donor is not None:
                ax.annotate(f"from {donor}", (rows["step"].iloc[0], rows[metric].iloc[0]), fontsize=6, color=colour)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title("population-based training: members, and where one took over another (dashed)")
    if seen:
        ax.legend(fontsize=7, ncol=2)
    if (curves[metric].dropna() > 0).all():
        ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


#: Above this many completed trials importances come from PED-ANOVA instead of fANOVA: fANOVA's
#: random forest takes about a second per thousand trials and parameter (measured here), PED-ANOVA
#: (Watanabe et al. 2023, also Optuna's) a hundredth of that, which keeps the end of a large sweep quick.
FANOVA_MAX_TRIALS = 300


def _evaluator(complete: int) -> Any:
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    return FanovaImportanceEvaluator(seed=0) if complete <= FANOVA_MAX_TRIALS else PedAnovaImportanceEvaluator()


def _save(axes: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
    figure.set_size_inches(8, 5)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_training_curves(curves: pd.DataFrame, metric: str, path: str | Path, title: str = "") -> Path:
    """One line per trial of `metric` against step; a cross where a stopped (PRUNED) trial stopped.

    `curves` is the long table of `SweepResult.curves()`: number, state, step and one column per metric.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    if metric not in curves.columns:
        raise ValueError(f"no reports of metric {metric!r}; reported metrics: {sorted(_metric_columns(curves))}")
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    stopped_label = True
    for _, rows in curves.dropna(subset=[metric]).groupby("number", sort=True):
        rows = rows.sort_values("step")
        pruned = rows["state"].iloc[-1] == "PRUNED"
        ax.plot(rows["step"], rows[metric], lw=1.0, alpha=0.55 if pruned else 0.9, color="tab:gray" if pruned else None)
        if pruned:
            ax.scatter(
                rows["step"].iloc[-1],
                rows[metric].iloc[-1],
                marker="x",
                color="tab:red",
                s=22,
                zorder=3,
                label="stopped early" if stopped_label else None,
            )
            stopped_label = False
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(title or f"training curves ({curves['number'].nunique()} trials)")
    ax.grid(alpha=0.3)
    if not stopped_label:
        ax.legend(loc="best")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _metric_columns(curves: pd.DataFrame) -> list[str]:
    return [c for c in curves.columns if c not in ("number", "state", "step")]
