"""The Prefect UI as the monitoring screen: a sweep's artifacts, kept current while it runs.

Four artifacts per sweep, keyed by the sweep's name made safe for Prefect's keys:

- `<key>-summary`  table, one row per trial in `prefect_hpo.ranking`'s order (best value at the
                   step each reached first, stopped trials included; state, parameters,
                   objective values, step reached, duration, its run), numbers to 6
                   significant digits;
- `<key>-best`     markdown: the best configuration as a JSON block to copy, its metrics, and the
                   Pareto front when there are several objectives;
- `<key>-progress` progress: the share used of whichever budget is closest to its limit;
- `<key>-budget`   markdown: limit, used and left per kind of budget;

and, when the sweep ends, `<key>-plots` (`prefect_hpo.reporting.plots_artifact`).

Everything shown is read from the trial store, the single source of truth, never
from the loop's memory. Each run of a sweep creates its four artifacts once and then
updates them in place (the UI's artifact pages always show the latest; the flow run's
page lists each once). Updates are rate-limited (`min_interval` seconds between
two, default 5): each one is a read of the store and a few API calls, which a
sweep of thousands of trials must not pay per trial. The last update, when the
sweep ends, is always made.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from uuid import UUID

import httpx
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate
from prefect.exceptions import PrefectException
from prefect.settings import PREFECT_UI_URL

from prefect_hpo.budget import BudgetStatus
from prefect_hpo.objective import Objective, dominates
from prefect_hpo.ranking import ordered, ranked
from prefect_hpo.records import TrialRecord, TrialState
from prefect_hpo.reporting.formatting import significant
from prefect_hpo.store.sql import SqlTrialStore

_log = logging.getLogger("prefect_hpo.artifacts")


def artifact_key(sweep_name: str) -> str:
    """The sweep's name as Prefect accepts in an artifact key: lowercase letters, digits and dashes."""
    key = re.sub(r"[^a-z0-9]+", "-", sweep_name.lower()).strip("-")
    return key or "sweep"


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
    """One row per trial in the ranking's order (`prefect_hpo.ranking.ordered`), the first `max_rows` of them;
    numbers to 6 significant digits."""
    rows = []
    for r in ordered(records, objectives[0])[:max_rows]:
        row: dict[str, Any] = {"number": r.number, "state": r.state.value}
        for i, o in enumerate(objectives):
            row[o.metric] = significant(r.values[i]) if r.values and i < len(r.values) else None
        row.update({f"param {k}": _cell(v) for k, v in r.config.items()})
        row["step"] = r.last_step
        row["duration s"] = None if r.duration is None else round(r.duration, 3)
        row["attempt"] = r.attempt
        row["host"] = r.worker.rsplit(":", 1)[0] if r.worker else None
        row["GPUs"] = ",".join(r.devices) or None
        row["threads"] = r.cpu_threads
        row["run"] = _run_link(r.task_run_id, ui_url)
        row["reason"] = (r.error.strip().splitlines()[-1][:120] if r.error else r.reason) or ""
        rows.append(row)
    return rows


def best_markdown(name: str, records: Sequence[TrialRecord], objectives: Sequence[Objective]) -> str:
    """The best configuration, ready to copy, with its metrics; the Pareto front for several objectives.

    The best configuration is the first COMPLETE trial in the ranking's order (one that ran to its end);
    trials stopped early that rank ahead of it are listed below it, with the step they reached."""
    order = ranked(records, objectives[0])
    best = next((r for r in order if r.state == TrialState.COMPLETE), None)
    if best is None:
        return f"# {name}: best configuration\n\nNo trial has completed yet.\n"
    ahead = order[: order.index(best)]
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
    if ahead:
        metric = objectives[0].metric
        lines += ["", f"Ranked ahead of it by {metric} at the step each reached, but stopped before the end:", ""]
        lines += [f"- trial {r.number} ({r.state.value} at step {r.last_step}): {r.value:.6g}" for r in ahead[:5]]
        if len(ahead) > 5:
            lines.append(f"- and {len(ahead) - 5} more (the summary table lists them)")
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


def budget_markdown(
    name: str, status: BudgetStatus, reason: str | None = None, devices: Mapping[str, Sequence[int]] | None = None
) -> str:
    """What is left of each budget, like ClearML's remaining-budget report; with `devices` (each GPU of this
    machine -> the trials holding it now), which are busy and which idle."""
    lines = [f"# {name}: budget", "", "| budget | limit | used | left |", "| --- | ---: | ---: | ---: |"]
    for kind, part in status.as_dict().items():
        if isinstance(part, dict):
            lines.append(f"| {kind} | {_num(part['limit'])} | {_num(part['used'])} | {_num(part['left'])} |")
    lines += ["", f"Running now: {status.usage.running}. Used: {status.fraction_used():.0%} of the tightest limit."]
    if devices:
        busy = sum(1 for held in devices.values() if held)
        lines += ["", f"GPUs: {busy} busy, {len(devices) - busy} idle.", "", "| GPU | trials on it |", "| --- | --- |"]
        for device, held in devices.items():
            lines.append(f"| {device} | {', '.join(map(str, sorted(held))) or 'idle'} |")
    if reason:
        lines += ["", f"Ended: {reason}."]
    return "\n".join(lines) + "\n"


class DeviceUse:
    """Which trials hold each of this machine's GPUs now, from the trials' starts and ends."""

    def __init__(self, devices: Sequence[str]) -> None:
        self._held: dict[str, set[int]] = {device: set() for device in devices}

    def started(self, trial: TrialRecord) -> None:
        for device in trial.devices:
            self._held.setdefault(device, set()).add(trial.number)

    def ended(self, trial: TrialRecord) -> None:
        for holders in self._held.values():
            holders.discard(trial.number)

    def now(self) -> dict[str, list[int]]:
        """Each GPU -> the trials holding it ([] for an idle one)."""
        return {device: sorted(holders) for device, holders in self._held.items()}


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
        devices: Sequence[str] = (),
    ) -> None:
        """`devices`: this machine's GPUs, whose use the budget artifact shows (none: trials run elsewhere)."""
        self._store, self._sweep_id, self._name = store, sweep_id, sweep_name
        self._devices = DeviceUse(devices)
        self._objectives = objectives
        self._key = artifact_key(sweep_name)
        self._min_interval, self._clock = min_interval, clock
        self._last: float | None = None
        self._ids: dict[str, UUID] = {}
        self.published = 0

    def trial_started(self, trial: TrialRecord) -> None:
        self._devices.started(trial)

    def trial_ended(self, trial: TrialRecord, status: BudgetStatus) -> None:
        self._devices.ended(trial)
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
        budget = budget_markdown(self._name, status, reason, self._devices.now())
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


def _created(artifact_id: Any) -> UUID:
    """The id a create_*_artifact call returned (called from sync code, it is never a coroutine)."""
    if not isinstance(artifact_id, UUID):
        raise TypeError(f"expected an artifact id, got {artifact_id!r}")
    return artifact_id


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return significant(value)
    return json.dumps(value, default=str)


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _run_link(task_run_id: str | None, ui_url: str | None) -> str:
    if not task_run_id:
        return ""
    return f"{ui_url.rstrip('/')}/runs/task-run/{task_run_id}" if ui_url else task_run_id
