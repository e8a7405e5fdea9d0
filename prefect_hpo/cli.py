"""`prefect-hpo`: run, watch and export sweeps from the terminal.

    prefect-hpo run SPEC.yaml                 run the sweep a SweepSpec describes (the deployment form's spec)
    prefect-hpo status NAME                   the sweep's trials as a table, with a progress bar of its budget
    prefect-hpo top NAME [-k 5]               the k best trials
    prefect-hpo export NAME [--format csv|parquet] [-o FILE]
    prefect-hpo plot NAME [-o FOLDER]         history, importance, parallel coordinates, training curves (PNG)
    prefect-hpo resume NAME                   run a sweep again from the spec it last ran from

Every command but `run` takes `--storage URL` (default: the prefect_hpo home's SQLite file).
Nothing here the library does not already do: each command is a few calls to it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pydantic
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.result import SweepResult, load_result
from prefect_hpo.space import SearchSpace
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.store.urls import resolve_storage


def _table(frame: pd.DataFrame, title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for column in frame.columns:
        table.add_column(str(column).removeprefix("params_"), overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*[_cell(v) for v in row])
    return table


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _columns(result: SweepResult) -> list[str]:
    frame = result.trials
    params = [c for c in frame.columns if c.startswith("params_")]
    return ["number", "state", *[o.metric for o in result.objectives], *params, "last_step", "duration"]


def _run(args: argparse.Namespace, console: Console) -> int:
    from prefect_hpo.spec import SweepSpec, run_spec

    spec = SweepSpec.model_validate(yaml.safe_load(Path(args.spec).read_text()))
    return _show_ended(run_spec(spec), console)


def _resume(args: argparse.Namespace, console: Console) -> int:
    from prefect_hpo.spec import SweepSpec, run_spec

    store = SqlTrialStore(resolve_storage(args.storage))
    try:
        stored = store.sweep(store.sweep_id(args.name))["spec"]
    finally:
        store.close()
    if stored is None:
        raise PrefectHPOError(
            f"sweep {args.name!r} was not started from a spec, so there is nothing to resume it from; "
            "call sweep() again with the same name (it continues), or start it with `prefect-hpo run SPEC.yaml`"
        )
    return _show_ended(run_spec(SweepSpec.model_validate(stored)), console)


def _show_ended(result: SweepResult, console: Console) -> int:
    console.print(_table(result.top(5)[[c for c in _columns(result) if c in result.top(5).columns]], "best trials"))
    console.print(f"sweep {result.name!r}: {len(result.records)} trials; {result.stop_reason}")
    console.print(f"best {result.objectives[0].metric} = {result.best_value} with {result.best_config}")
    return 0


def _status(args: argparse.Namespace, console: Console) -> int:
    result = load_result(args.name, args.storage)
    console.print(_table(result.trials[_columns(result)], f"sweep {result.name}"))
    status = result.budget_status
    counts = result.trials["state"].value_counts().to_dict()
    console.print(", ".join(f"{state}: {n}" for state, n in sorted(counts.items())))
    progress = Progress(TextColumn("budget"), BarColumn(), TextColumn("{task.percentage:>3.0f}% of the tightest limit"))
    progress.add_task("budget", total=100, completed=round(100 * status.fraction_used()))
    console.print(progress.get_renderable())
    if result.best_trial is not None:
        console.print(
            f"best {result.objectives[0].metric} = {result.best_value:.6g} (trial {result.best_trial.number})"
        )
    return 0


def _top(args: argparse.Namespace, console: Console) -> int:
    result = load_result(args.name, args.storage)
    top = result.top(args.k)
    console.print(_table(top[[c for c in _columns(result) if c in top.columns]], f"{args.name}: top {args.k}"))
    return 0


def _export(args: argparse.Namespace, console: Console) -> int:
    result = load_result(args.name, args.storage)
    out = Path(args.output or f"{args.name}.{args.format}")
    written = result.to_csv(out) if args.format == "csv" else result.to_parquet(out)
    console.print(f"{len(result.records)} trials written to {written}")
    return 0


def _plot(args: argparse.Namespace, console: Console) -> int:
    from prefect_hpo.reporting.plots import draw_plots

    url = resolve_storage(args.storage)
    result = load_result(args.name, url)
    store = SqlTrialStore(url)
    try:
        space = SearchSpace.build(store.sweep(store.sweep_id(args.name))["space"])
    finally:
        store.close()
    images = draw_plots(result.records, space, result.objectives, result.curves(), args.output or f"{args.name}-plots")
    for name, path in images.items():
        console.print(f"{name}: {path}")
    if not images:
        console.print("nothing to draw yet: no trial has completed")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="prefect-hpo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = root.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the sweep a SweepSpec YAML file describes")
    run.add_argument("spec", help="YAML file: name, train, space, objective, strategy, scheduler, budget, ...")
    run.set_defaults(handler=_run)
    for name, handler, helptext in (
        ("status", _status, "the sweep's trials and budget"),
        ("top", _top, "the k best trials"),
        ("export", _export, "write every trial to CSV or Parquet"),
        ("plot", _plot, "draw the sweep's plots to PNG files"),
        ("resume", _resume, "run a sweep again from the spec it last ran from"),
    ):
        command = commands.add_parser(name, help=helptext)
        command.add_argument("name", help="the sweep's name")
        command.add_argument("--storage", default=None, help="SQLAlchemy URL or SQLite file (default: ~/.prefect_hpo)")
        command.set_defaults(handler=handler)
        if name == "top":
            command.add_argument("-k", type=int, default=5)
        if name == "export":
            command.add_argument("--format", choices=["csv", "parquet"], default="csv")
            command.add_argument("-o", "--output", default=None, help="file (default: NAME.FORMAT)")
        if name == "plot":
            command.add_argument("-o", "--output", default=None, help="folder (default: NAME-plots)")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console()
    try:
        return int(args.handler(args, console))
    except (PrefectHPOError, pydantic.ValidationError, yaml.YAMLError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
