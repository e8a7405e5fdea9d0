"""`prefect-hpo`: run, list, watch and export sweeps from the terminal.

    prefect-hpo run SPEC.yaml                 run the sweep a SweepSpec describes (the deployment form's spec)
    prefect-hpo ls                            the sweeps in the store: status, trials by state, best value
    prefect-hpo status NAME                   the sweep's trials as a table, with a progress bar of its budget
    prefect-hpo top NAME [-k 5]               the k best trials
    prefect-hpo export NAME [--format csv|parquet] [-o FILE] [--force]
    prefect-hpo plot NAME [-o FOLDER]         history, importance, parallel coordinates, training curves (PNG)
    prefect-hpo resume NAME [--max-trials N] [--time-limit S]
                                              run a sweep again from the spec it last ran from

Every command but `run` takes `--storage URL` (default: hpo.db in $PREFECT_HPO_HOME, else in ~/.prefect_hpo).
Tables fit the terminal (80 columns when piped): text is cut, numbers never; `--wide` shows everything.
Nothing here the library does not already do: each command is a few calls to it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pydantic
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.text import Text

from prefect_hpo.errors import PrefectHPOError, StoreError
from prefect_hpo.overview import find_sweep, list_sweeps
from prefect_hpo.reporting.tables import columns_of, render
from prefect_hpo.result import SweepResult, result_from_store
from prefect_hpo.space import SearchSpace
from prefect_hpo.storage_refs import resolve
from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.store.urls import default_home, sqlite_file


def _print_table(
    console: Console, frame: pd.DataFrame, title: str, wide: bool, whole: Collection[str] = ("state",)
) -> None:
    """A table that fits the console (text cut, numbers whole), or every column whole with `wide`."""
    table, layout = render(columns_of(frame, whole), None if wide else console.width)
    if wide:
        console.width = max(console.width, layout.total)  # a pipe gets whole lines, a terminal wraps them
    console.print(title, highlight=False)
    console.print(table)
    if layout.left_out:
        console.print(f"left out to fit {console.width} columns: {', '.join(layout.left_out)} (--wide shows them)")


def _columns(result: SweepResult, frame: pd.DataFrame) -> list[str]:
    """The columns of a trials table, in the order they give way when the width runs out (last first)."""
    params = [c for c in frame.columns if c.startswith("params_")]
    errors = ["error"] if frame["error"].notna().any() else []
    placed = ["devices", "cpu_threads"] if "devices" in frame and frame["devices"].notna().any() else []
    metrics = [o.metric for o in result.objectives]
    return ["number", "state", *metrics, *params, *errors, "last_step", "duration", *placed]


def _age(when: datetime, now: datetime) -> str:
    """How long ago, for a person: '42 s ago', '5 min ago', '3 h ago', '2 d ago'."""
    seconds = max(0.0, (now - when).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


@contextmanager
def _store(storage: str | None) -> Iterator[SqlTrialStore]:
    """The store a command reads; a SQLite file that does not exist is an error here, not a new empty store."""
    url = resolve(storage)
    path = sqlite_file(url)
    if path is not None and not path.exists():
        named = "the default store" if storage is None else f"--storage {storage!r}"
        raise StoreError(
            f"no trial store at {path} ({named}): no sweep has stored trials there; check the path, "
            f"or pass --storage (the default is {default_home() / 'hpo.db'})"
        )
    store = SqlTrialStore(url)
    try:
        yield store
    finally:
        store.close()


def _load(args: argparse.Namespace) -> SweepResult:
    with _store(args.storage) as store:
        return result_from_store(store, _find(store, args))


def _find(store: SqlTrialStore, args: argparse.Namespace) -> int:
    listing = "`prefect-hpo ls" + ("`" if args.storage is None else f" --storage {args.storage}`")
    return find_sweep(store, args.name, listing)


def _run(args: argparse.Namespace, console: Console) -> int:
    from prefect_hpo.spec import SweepSpec, run_spec

    spec = SweepSpec.model_validate(yaml.safe_load(Path(args.spec).read_text()))
    return _show_ended(run_spec(spec), console, args.wide)


def _resume(args: argparse.Namespace, console: Console) -> int:
    from prefect_hpo.budget import BudgetStatus
    from prefect_hpo.spec import SweepSpec, run_spec

    with _store(args.storage) as store:
        before = result_from_store(store, _find(store, args))
        stored = store.sweep(store.sweep_id(before.name))["spec"]
    if stored is None:
        raise PrefectHPOError(
            f"sweep {args.name!r} was not started from a spec, so there is nothing to resume it from; "
            "call sweep() again with the same name (it continues), or start it with `prefect-hpo run SPEC.yaml`"
        )
    raised = {k: v for k, v in (("max_trials", args.max_trials), ("time_limit", args.time_limit)) if v is not None}
    spec = SweepSpec.model_validate({**stored, "budget": {**stored.get("budget", {}), **raised}})
    budget = spec.budget.to_budget()
    left = BudgetStatus(budget, before.budget_status.usage).left_trials
    if left == 0:
        raise PrefectHPOError(
            f"sweep {args.name!r} has used its budget: {before.budget_status.usage.trials_started} trials "
            f"started of max_trials={budget.max_trials}; raise it to continue, e.g. "
            f"`prefect-hpo resume {args.name} --max-trials {(budget.max_trials or 0) + 10}`"
        )
    return _show_ended(run_spec(spec), console, args.wide)


def _show_ended(result: SweepResult, console: Console, wide: bool) -> int:
    top = result.top(5)
    _print_table(console, top[[c for c in _columns(result, top) if c in top.columns]], "best trials", wide)
    console.print(f"sweep {result.name!r}: {len(result.records)} trials; {result.stop_reason}")
    console.print(f"best {result.objectives[0].metric} = {result.best_value} with {result.best_config}")
    return 0


def _ls(args: argparse.Namespace, console: Console) -> int:
    with _store(args.storage) as store:
        frame, where = list_sweeps(store), store.safe_url
    if frame.empty:
        console.print(f"no sweeps in {where} yet")
        return 0
    now = datetime.now(UTC)
    frame["updated"] = [_age(when, now) for when in frame["updated"]]
    shown = [c for c in frame.columns if c not in ("objective", "updated")] + ["updated", "objective"]
    _print_table(console, frame[shown], f"sweeps in {where}", args.wide, whole=("name", "status", "updated"))
    return 0


def _status(args: argparse.Namespace, console: Console) -> int:
    result = _load(args)
    trials = result.trials
    _print_table(console, trials[_columns(result, trials)], f"sweep {result.name}", args.wide)
    status = result.budget_status
    counts = trials["state"].value_counts().to_dict()
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
    result = _load(args)
    top = result.top(args.k)
    _print_table(
        console, top[[c for c in _columns(result, top) if c in top.columns]], f"{args.name}: top {args.k}", args.wide
    )
    return 0


def _export(args: argparse.Namespace, console: Console) -> int:
    result = _load(args)
    out = Path(args.output or f"{args.name}.{args.format}")
    if out.exists() and not args.force:
        raise PrefectHPOError(f"{out} exists; pass --force to overwrite it, or -o FILE to write the trials elsewhere")
    written = result.to_csv(out) if args.format == "csv" else result.to_parquet(out)
    console.print(f"{len(result.records)} trials written to {written}")
    return 0


def _plot(args: argparse.Namespace, console: Console) -> int:
    from prefect_hpo.reporting.plots import draw_plots

    result = _load(args)
    space = SearchSpace.build(result.space)
    images = draw_plots(result.records, space, result.objectives, result.curves(), args.output or f"{args.name}-plots")
    for name, path in images.items():
        console.print(f"{name}: {path}")
    if not images:
        console.print("nothing to draw yet: no trial has completed")
    return 0


def _storage_help() -> str:
    """--storage's help, naming the default as it is now (PREFECT_HPO_HOME respected); % escaped for argparse."""
    default = str(default_home() / "hpo.db").replace("%", "%%")
    return (
        "SQLAlchemy URL, SQLite file, env:VARIABLE or block:SECRET-BLOCK "
        f"(default: {default}, i.e. hpo.db in $PREFECT_HPO_HOME, else in ~/.prefect_hpo)"
    )


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="prefect-hpo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = root.add_subparsers(dest="command", required=True)
    wide = "show every column whole, however wide (default: fit the terminal, 80 columns when piped)"
    run = commands.add_parser("run", help="run the sweep a SweepSpec YAML file describes")
    run.add_argument("spec", help="YAML file: name, train, space, objective, strategy, scheduler, budget, ...")
    run.add_argument("--wide", action="store_true", help=wide)
    run.set_defaults(handler=_run)
    listing = commands.add_parser("ls", help="list the sweeps in the store: status, trials by state, best value")
    listing.add_argument("--storage", default=None, help=_storage_help())
    listing.add_argument("--wide", action="store_true", help=wide)
    listing.set_defaults(handler=_ls)
    for name, handler, helptext in (
        ("status", _status, "the sweep's trials and budget"),
        ("top", _top, "the k best trials"),
        ("export", _export, "write every trial to CSV or Parquet"),
        ("plot", _plot, "draw the sweep's plots to PNG files"),
        ("resume", _resume, "run a sweep again from the spec it last ran from"),
    ):
        command = commands.add_parser(name, help=helptext)
        command.add_argument("name", help="the sweep's name (`prefect-hpo ls` lists them)")
        command.add_argument("--storage", default=None, help=_storage_help())
        command.set_defaults(handler=handler)
        if name in ("status", "top", "resume"):
            command.add_argument("--wide", action="store_true", help=wide)
        if name == "top":
            command.add_argument("-k", type=int, default=5)
        if name == "export":
            command.add_argument("--format", choices=["csv", "parquet"], default="csv")
            command.add_argument("-o", "--output", default=None, help="file (default: NAME.FORMAT)")
            command.add_argument("--force", action="store_true", help="overwrite the file if it exists")
        if name == "plot":
            command.add_argument("-o", "--output", default=None, help="folder (default: NAME-plots)")
        if name == "resume":
            command.add_argument(
                "--max-trials", type=int, default=None, help="raise the budget's max_trials (a spent budget continues)"
            )
            command.add_argument(
                "--time-limit", type=float, default=None, help="the budget's time_limit in seconds for this run"
            )
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console(markup=False, soft_wrap=True)  # names, configs and errors print as they are, unbroken
    try:
        return int(args.handler(args, console))
    except (PrefectHPOError, pydantic.ValidationError, yaml.YAMLError, OSError) as exc:
        console.print(Text.assemble(("error:", "red"), f" {exc}"), highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
