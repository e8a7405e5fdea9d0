"""Plots a person would rather look at than read, drawn with matplotlib to PNG files.

Optimization history, parameter importance and parallel coordinates are Optuna's
own matplotlib plots, drawn over an in-memory Optuna study rebuilt from the
store's records (we add nothing to how Optuna draws or computes importances).
That study holds every ranked trial, complete and stopped early, with its value
at the last step they all reached (`prefect_hpo.ranking.compared_at_common_step`,
named in each plot's title) and at its stored trial number. Importances come from
PED-ANOVA, which needs no scikit-learn.
Training curves are ours: Optuna's intermediate-value plot has no notion of
where a trial was stopped, which is what a person looks for in an ASHA sweep.
"""

from __future__ import annotations

import importlib
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from prefect_hpo.helpers import follow_parent
from prefect_hpo.objective import Objective
from prefect_hpo.ranking import Comparison, compared_at_common_step
from prefect_hpo.records import TrialRecord
from prefect_hpo.space import SearchSpace

#: The plots `draw_plots` makes, by file stem.
PLOT_NAMES = ("history", "importance", "parallel", "curves")


def comparison_of(records: Sequence[TrialRecord], curves: pd.DataFrame, objective: Objective) -> Comparison:
    """The ranked trials (complete and stopped) at the last step they all reached, from the long table of
    `SweepResult.curves()` (see `prefect_hpo.ranking.compared_at_common_step`)."""
    reported: dict[int, list[tuple[int, float]]] = {}
    if objective.metric in curves.columns:
        rows = curves[["number", "step", objective.metric]].dropna()
        for number, step, value in rows.itertuples(index=False):
            if math.isfinite(value):
                reported.setdefault(int(number), []).append((int(step), float(value)))
    return compared_at_common_step(records, {n: sorted(v) for n, v in reported.items()}, objective)


def study_of(records: Sequence[TrialRecord], space: SearchSpace, objective: Objective, comparison: Comparison) -> Any:
    """An in-memory Optuna study of the compared trials (for Optuna's plots and importances), each with its
    value at the comparison's step and at its stored trial number: Optuna numbers trials as they are added,
    so every number in between (a failed trial, one left out) is added as a FAIL trial, which Optuna's
    plots and importances skip."""
    import optuna

    if optuna.logging.get_verbosity() <= optuna.logging.INFO:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # Optuna logs every study it creates at INFO
    by_number = {r.number: r for r in records}
    study = optuna.create_study(direction=objective.direction)
    for number in range(max(comparison.values, default=-1) + 1):
        record = by_number.get(number)
        if record is None or number not in comparison.values:
            study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
            continue
        study.add_trial(
            optuna.trial.create_trial(
                params=space.to_optuna_params(record.config),
                distributions=space.distributions(record.config),
                value=comparison.values[number],
                user_attrs={"state": record.state.value, "last_step": record.last_step},
            )
        )
    return study


def prepare_drawing_process(parent_pid: int) -> None:
    """Make this (helper) process ready to draw: leave with the parent that started it, so that a killed
    sweep does not leave it behind, then import what drawing needs."""
    follow_parent(parent_pid)
    # Optuna's importance package imports scikit-learn at its import, for the fANOVA evaluator (3 s of CPU
    # here, more than all the rest of drawing's imports); the PED-ANOVA evaluator drawn with needs none of
    # it. In this helper process alone, a scikit-learn not imported yet is marked missing, which Optuna's
    # optional import takes as "not installed". (The helper is forked from the fork server: a user's script
    # that imports scikit-learn at its top has it here already, and it is left alone.)
    sys.modules.setdefault("sklearn", None)  # type: ignore[arg-type]
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

    History, importance and parallel coordinates show the first objective of every ranked trial
    (complete or stopped early) at the last step they all reached, or the final values when all
    are complete; each title says which. History needs one such trial, importance and parallel
    coordinates two and a searched parameter, training curves an intermediate report; plots
    without enough data are left out.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import optuna.visualization.matplotlib as ovm

    objective = objectives[0]
    comparison = comparison_of(records, curves, objective)
    study = study_of(records, space, objective, comparison)
    compared = len(comparison.values)
    metric = objective.metric
    out: dict[str, Path] = {}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    searched = bool(space.distributions({name: None for name in space.params}))
    makers: list[tuple[str, int, Callable[[], Any]]] = [
        ("history", 1, lambda: ovm.plot_optimization_history(study, target_name=metric)),
        (
            "importance",
            2,
            lambda: ovm.plot_param_importances(study, evaluator=importance_evaluator(), target_name=metric),
        ),
        ("parallel", 2, lambda: ovm.plot_parallel_coordinate(study, target_name=metric)),
    ]
    for name, needs, make in makers:
        if compared < needs or (name != "history" and not searched):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                axes = make()
            except (ValueError, RuntimeError, ZeroDivisionError):
                # e.g. importances of trials that all scored the same: nothing to draw, the rest still is
                continue
        out[name] = _save(axes, folder / f"{name}.png", comparison.describe())
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


def importance_evaluator() -> Any:
    """PED-ANOVA (Watanabe et al. 2023), Optuna 5's default importance evaluator: it needs numpy only, where
    fANOVA and mean decrease impurity need scikit-learn (not a dependency of prefect_hpo), and it takes
    about a hundredth of fANOVA's time (a second per thousand trials and parameter, measured here)."""
    from optuna.importance import PedAnovaImportanceEvaluator

    return PedAnovaImportanceEvaluator()


def _save(axes: Any, path: Path, subtitle: str) -> Path:
    import matplotlib.pyplot as plt

    first = axes.flat[0] if hasattr(axes, "flat") else axes
    # Optuna titles some plots on the left: add the line under whichever title is set
    loc = next((loc for loc in ("center", "left", "right") if first.get_title(loc=loc)), "center")
    first.set_title(f"{first.get_title(loc=loc)}\n{subtitle}", loc=loc, fontsize=10)
    figure = first.get_figure()
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
