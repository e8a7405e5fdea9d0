"""The Prefect UI as the monitoring screen: a sweep's artifacts, kept current while it runs.

Four artifacts per sweep, keyed by the sweep's name made safe for Prefect's keys:

- `<key>-summary`  table, one row per trial, best first (state, parameters, objective values,
                   step reached, duration, its run);
- `<key>-best`     markdown: the best configuration as a JSON block to copy, its metrics, and the
                   Pareto front when there are several objectives;
- `<key>-progress` progress: the share used of whichever budget is closest to its limit;
- `<key>-budget`   markdown: limit, used and left per kind of budget;

and, when the sweep ends, `<key>-plots`: optimization history, parameter importance,
parallel coordinates and training curves, drawn to PNG files next to the store and
embedded in a markdown artifact as data URIs (the Prefect UI renders them in place;
an image artifact would need the PNGs served at a URL the browser can reach).

Everything shown is read from the trial store, the single source of truth, never
from the loop's memory. Each run of a sweep creates its four artifacts once and then
updates them in place (the UI's artifact pages always show the latest; the flow run's
page lists each once). Updates are rate-limited (`min_interval` seconds between
two, default 5): each one is a read of the store and a few API calls, which a
sweep of thousands of trials must not pay per trial. The last update, when the
sweep ends, is always made.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate
from prefect.exceptions import PrefectException
from prefect.settings import PREFECT_UI_URL
from sqlalchemy.engine import make_url

from prefect_hpo.budget import BudgetStatus
from prefect_hpo.executors.runners import worker_context
from prefect_hpo.objective import Objective, dominates
from prefect_hpo.records import TrialRecord, TrialState
from prefect_hpo.reporting.plots import draw_plots, prepare_drawing_process
from prefect_hpo.space import SearchSpace
from prefect_hpo.store.sql import SqlTrialStore

_log = logging.getLogger("prefect_hpo.artifacts")


def artifact_key(sweep_name: str) -> str:
    """The sweep's name as Prefect accepts in an artifact key: lowercase letters, digits and dashes."""
    key = re.sub(r"[^a-z0-9]+", "-", sweep_name.lower()).strip("-")
    return key or "sweep"


def ranked(records: Sequence[TrialRecord], objective: Objective) -> list[TrialRecord]:
    """Trials best first: completed ones by the first objective, then the rest by number."""

    def key(r: TrialRecord) -> tuple[int, float, int]:
        usable = r.state == TrialState.COMPLETE and r.value is not None and math.isfinite(r.value)
        return (0, objective.sort_key(r.value), r.number) if usable else (1, 0.0, r.number)

    return sorted(records, key=key)


#: Rows of the summary table at most: the best ones. Prefect refuses an artifact update whose event
#: exceeds 1.5 MB (about 7,000 rows of a small sweep), and a longer table is no screen to read anyway;
#: every trial is in the store (result.trials, `prefect-hpo export`).
SUMMARY_MAX_ROWS = 500


def summary_rows(
    records: Sequence[TrialRecord],
    objectives: Sequence[Objective],
    ui_url: str | None = None,
    max_rows: int = SUMMARY_MAX_ROWS,
) -> list[dict[str, Any]]:
    """One row per trial, best first, for the summary table (the best `max_rows` of them)."""
    rows = []
    for r in ranked(records, objectives[0])[:max_rows]:
        row: dict[str, Any] = {"number": r.number, "state": r.state.value}
        for i, o in enumerate(objectives):
            value = r.values[i] if r.values and i < len(r.values) else None
            row[o.metric] = None if value is None or not math.isfinite(value) else value
        row.update({f"param {k}": _cell(v) for k, v in r.config.items()})
        row["step"] = r.last_step
        row["duration s"] = None if r.duration is None else round(r.duration, 3)
        row["attempt"] = r.attempt
        row["run"] = _run_link(r.task_run_id, ui_url)
        row["reason"] = (r.error.strip().splitlines()[-1][:120] if r.error else r.reason) or ""
        rows.append(row)
    return rows


def best_markdown(name: str, records: Sequence[TrialRecord], objectives: Sequence[Objective]) -> str:
    """The best configuration, ready to copy, with its metrics; the Pareto front for several objectives."""
    order = ranked(records, objectives[0])
    best = order[0] if order and order[0].state == TrialState.COMPLETE and order[0].value is not None else None
    if best is None:
        return f"# {name}: best configuration\n\nNo trial has completed yet.\n"
    metrics = {**best.metrics, **{o.metric: v for o, v in zip(objectives, best.values or (), strict=False)}}
    lines = [
        f"# {name}: best configuration",
        "",
        f"Trial {best.number}, {objectives[0].metric} = {best.value:.6g} ({objectives[0].mode}).",
        "",
        "```json",
        json.dumps(best.config, indent=2, sort_keys=True, default=str),
        "```",
        "",
        "| metric | value |",
        "| --- | ---: |",
        *[f"| {k} | {v:.6g} |" for k, v in sorted(metrics.items()) if isinstance(v, float | int)],
    ]
    if len(objectives) > 1:
        complete = [r for r in records if r.state == TrialState.COMPLETE and r.values]
        front = [
            r for r in complete if not any(dominates(o.values or (), r.values or (), objectives) for o in complete)
        ]
        lines += ["", "## Pareto front", "", "| trial | " + " | ".join(o.metric for o in objectives) + " | config |"]
        lines += ["| ---: |" + " ---: |" * len(objectives) + " --- |"]
        for r in sorted(front, key=lambda r: r.number):
            values = " | ".join(f"{v:.6g}" for v in r.values or ())
            lines.append(f"| {r.number} | {values} | `{json.dumps(r.config, sort_keys=True, default=str)}` |")
    return "\n".join(lines) + "\n"


def budget_markdown(name: str, status: BudgetStatus, reason: str | None = None) -> str:
    """What is left of each budget, like ClearML's remaining-budget report."""
    lines = [f"# {name}: budget", "", "| budget | limit | used | left |", "| --- | ---: | ---: | ---: |"]
    for kind, part in status.as_dict().items():
        if isinstance(part, dict):
            lines.append(f"| {kind} | {_num(part['limit'])} | {_num(part['used'])} | {_num(part['left'])} |")
    lines += ["", f"Running now: {status.usage.running}. Used: {status.fraction_used():.0%} of the tightest limit."]
    if reason:
        lines += ["", f"Ended: {reason}."]
    return "\n".join(lines) + "\n"


class ArtifactReporter:
    """Publishes a sweep's artifacts to the current flow run, at most every `min_interval` seconds."""

    def __init__(
        self,
        store: SqlTrialStore,
        sweep_id: int,
        sweep_name: str,
        objectives: tuple[Objective, ...],
        min_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store, self._sweep_id, self._name = store, sweep_id, sweep_name
        self._objectives = objectives
        self._key = artifact_key(sweep_name)
        self._min_interval, self._clock = min_interval, clock
        self._last: float | None = None
        self._ids: dict[str, UUID] = {}
        self.published = 0

    def trial_started(self, trial: TrialRecord) -> None:
        return None

    def trial_ended(self, trial: TrialRecord, status: BudgetStatus) -> None:
        now = self._clock()
        if self._last is None or now - self._last >= self._min_interval:
            self._publish_or_warn(status, None)
            self._last = now

    def sweep_ended(self, status: BudgetStatus, reason: str) -> None:
        self._publish_or_warn(status, reason)

    def _publish_or_warn(self, status: BudgetStatus, reason: str | None) -> None:
        """Artifacts are the monitoring screen, not the sweep: a Prefect API that refuses one is logged,
        and the sweep (whose every fact is in the store) goes on."""
        try:
            self._publish(status, reason)
        except (PrefectException, httpx.HTTPError) as exc:
            _log.warning("sweep %s: its artifacts could not be updated (%s: %s)", self._name, type(exc).__name__, exc)

    def _publish(self, status: BudgetStatus, reason: str | None) -> None:
        records = self._store.trials(self._sweep_id)
        rows = summary_rows(records, self._objectives, PREFECT_UI_URL.value())
        shown = f"the best {len(rows)} of {len(records)} trials" if len(rows) < len(records) else "every trial"
        best = best_markdown(self._name, records, self._objectives)
        budget = budget_markdown(self._name, status, reason)
        progress = 100.0 if reason is not None else round(100 * status.fraction_used(), 1)
        if not self._ids:
            # First publish of this run: one artifact per key, attached to the sweep's flow run...
            name = self._name
            self._ids = {
                "summary": _created(
                    create_table_artifact(
                        rows, key=f"{self._key}-summary", description=f"Sweep {name}: {shown}, best first."
                    )
                ),
                "best": _created(
                    create_markdown_artifact(
                        best, key=f"{self._key}-best", description=f"Sweep {name}: the best configuration so far."
                    )
                ),
                "budget": _created(
                    create_markdown_artifact(
                        budget, key=f"{self._key}-budget", description=f"Sweep {name}: budget used and left."
                    )
                ),
                "progress": _created(
                    create_progress_artifact(
                        progress, key=f"{self._key}-progress", description=f"Sweep {name}: budget used."
                    )
                ),
            }
        else:
            # ...then updated in place: a new version per update would bury the flow run's page under
            # hundreds of copies. The update reaches the key's latest version too (Prefect's collection).
            data: dict[str, Any] = {"summary": json.dumps(rows), "best": best, "budget": budget, "progress": progress}
            with get_client(sync_client=True) as client:
                for part, artifact_id in self._ids.items():
                    update = ArtifactUpdate(data=data[part])
                    if part == "summary":
                        update = ArtifactUpdate(
                            data=data[part], description=f"Sweep {self._name}: {shown}, best first."
                        )
                    client.update_artifact(artifact_id, update)
        self.published += 1


def plots_markdown(name: str, images: dict[str, Path]) -> str:
    """The plots as one markdown artifact, each PNG embedded as a data URI (the UI's markdown shows it)."""
    titles = {
        "history": "Optimization history",
        "importance": "Parameter importance",
        "parallel": "Parallel coordinates",
        "curves": "Training curves",
    }
    lines = [f"# {name}: plots", ""]
    for key, path in images.items():
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        lines += [f"## {titles.get(key, key)}", "", f"![{key}](data:image/png;base64,{encoded})", "", f"`{path}`", ""]
    if not images:
        lines.append("Nothing to draw yet: no trial has completed.")
    return "\n".join(lines) + "\n"


class PlotReporter:
    """Draws the sweep's plots into `folder` when it ends, and shows them in a `<key>-plots` artifact.

    The drawing happens in a helper process, started with the reporter, that imports matplotlib and
    Optuna's plotting and importance modules (about 3 s of CPU here: Optuna's importance module pulls
    in scikit-learn) while the trials run, and draws when the sweep ends. In the parent, that work
    held the GIL that the loop and Prefect's task engine need: over 1,000 trivial trials it was 13%
    of the parent's time (py-spy --gil) and the parent, not the trials, set the sweep's pace.
    """

    def __init__(self, store: SqlTrialStore, sweep_id: int, space: SearchSpace, folder: str | Path) -> None:
        self._store, self._sweep_id, self._space, self._folder = store, sweep_id, space, Path(folder)
        self.images: dict[str, Path] = {}
        self._drawer = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=worker_context(), initializer=prepare_drawing_process
        )
        # Start the process now, so that its imports overlap the trials; from a thread, as starting it
        # waits for the fork server, which may still be importing.
        threading.Thread(target=self._start_drawer, daemon=True, name="hpo-plot-start").start()

    def trial_started(self, trial: TrialRecord) -> None:
        return None

    def trial_ended(self, trial: TrialRecord, status: BudgetStatus) -> None:
        return None

    def sweep_ended(self, status: BudgetStatus, reason: str) -> None:
        from prefect_hpo.result import result_from_store

        result = result_from_store(self._store, self._sweep_id)
        try:
            drawing = self._drawer.submit(
                draw_plots, result.records, self._space, result.objectives, result.curves(), self._folder
            )
            self.images = drawing.result()
        except Exception as exc:  # noqa: BLE001 - plots are the monitoring screen, not the sweep's result
            _log.warning("sweep %s: its plots could not be drawn (%s: %s)", result.name, type(exc).__name__, exc)
            return
        finally:
            self.close()
        try:
            self._publish(result.name, self.images)
        except (PrefectException, httpx.HTTPError) as exc:  # the PNGs are on disk; the sweep's facts in the store
            _log.warning(
                "sweep %s: its plots artifact could not be made (%s: %s)", result.name, type(exc).__name__, exc
            )

    def _start_drawer(self) -> None:
        with contextlib.suppress(RuntimeError):  # the sweep ended (and closed this) before it started
            self._drawer.submit(int)

    def close(self) -> None:
        """Stop the helper process (a sweep that fails never reaches sweep_ended)."""
        self._drawer.shutdown(wait=False, cancel_futures=True)

    def _publish(self, name: str, images: dict[str, Path]) -> None:
        create_markdown_artifact(
            plots_markdown(name, images),
            key=f"{artifact_key(name)}-plots",
            description=f"Sweep {name}: optimization history, parameter importance, parallel coordinates, "
            "training curves.",
        )


def plots_folder(storage_url: str, sweep_name: str, home: Path) -> Path:
    """Where a sweep's plots go: next to a SQLite store's file, else under the prefect_hpo home."""
    url = make_url(storage_url)
    base = Path(url.database).parent if url.get_backend_name() == "sqlite" and url.database else home
    return base / "plots" / artifact_key(sweep_name)


class Reporters:
    """Several reporters heard as one (the terminal and the UI)."""

    def __init__(self, *reporters: Any) -> None:
        self._reporters = reporters

    def trial_started(self, trial: TrialRecord) -> None:
        for reporter in self._reporters:
            reporter.trial_started(trial)

    def trial_ended(self, trial: TrialRecord, status: BudgetStatus) -> None:
        for reporter in self._reporters:
            reporter.trial_ended(trial, status)

    def sweep_ended(self, status: BudgetStatus, reason: str) -> None:
        for reporter in self._reporters:
            reporter.sweep_ended(status, reason)


def _created(artifact_id: Any) -> UUID:
    """The id a create_*_artifact call returned (called from sync code, it is never a coroutine)."""
    if not isinstance(artifact_id, UUID):
        raise TypeError(f"expected an artifact id, got {artifact_id!r}")
    return artifact_id


def _cell(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else json.dumps(value, default=str)


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _run_link(task_run_id: str | None, ui_url: str | None) -> str:
    if not task_run_id:
        return ""
    return f"{ui_url.rstrip('/')}/runs/task-run/{task_run_id}" if ui_url else task_run_id
