"""Plots a person would rather look at than read, drawn with matplotlib to PNG files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


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
