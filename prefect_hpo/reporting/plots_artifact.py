"""A sweep's plots in the Prefect UI: drawn when it ends, in a helper process, published as `<key>-plots`.

Optimization history, parameter importance, parallel coordinates and training curves, drawn to PNG
files next to the store and embedded in a markdown artifact as data URIs (the Prefect UI renders them
in place; an image artifact would need the PNGs served at a URL the browser can reach). The drawing
and the artifact happen on a thread of their own that the process waits for at exit (`wait_for_plots`),
so that a sweep does not wait for plots that nothing in its result needs.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import httpx
import pandas as pd
import pebble
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.context import FlowRunContext, SettingsContext, get_settings_context
from prefect.events.worker import EventsWorker, should_emit_events
from prefect.exceptions import PrefectException
from sqlalchemy.engine import make_url

from prefect_hpo.executors.runners import worker_context
from prefect_hpo.objective import Objective
from prefect_hpo.records import TrialRecord
from prefect_hpo.reporting.artifacts import artifact_key
from prefect_hpo.reporting.plots import comparison_of, draw_plots, prepare_drawing_process
from prefect_hpo.space import SearchSpace

_log = logging.getLogger("prefect_hpo.artifacts")


def plots_markdown(name: str, images: dict[str, Path], compared: str = "") -> str:
    """The plots as one markdown artifact, each PNG embedded as a data URI (the UI's markdown shows it);
    `compared` says which trials, at which step, the history, importance and parallel plots show."""
    titles = {
        "history": "Optimization history",
        "importance": "Parameter importance",
        "parallel": "Parallel coordinates",
        "curves": "Training curves",
    }
    lines = [f"# {name}: plots", ""]
    if compared and images.keys() & {"history", "importance", "parallel"}:
        lines += [f"History, importance and parallel coordinates: {compared}.", ""]
    for key, path in images.items():
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        lines += [f"## {titles.get(key, key)}", "", f"![{key}](data:image/png;base64,{encoded})", "", f"`{path}`", ""]
    if not images:
        lines.append("Nothing to draw yet: no trial has completed.")
    return "\n".join(lines) + "\n"


class SweepSnapshot(Protocol):
    """What the plots are drawn from: a `prefect_hpo.result.SweepResult`. The result sits above this module
    (it draws its own training curves with `reporting.plots`), so it is named here by what is read of it."""

    @property
    def name(self) -> str: ...

    @property
    def objectives(self) -> tuple[Objective, ...]: ...

    @property
    def records(self) -> tuple[TrialRecord, ...]: ...

    def curves(self) -> pd.DataFrame: ...


class PlotDrawer:
    """Draws the sweep's plots into `folder` when it ends, and shows them in a `<key>-plots` artifact.

    A context manager: leaving it stops the helper, unless a drawing is under way (`draw`). The sweep's
    flow calls `draw(result)` when the sweep has run to its end; an interrupted or failed sweep leaves
    without drawing (a Ctrl-C should end the process in seconds, not after the plots).

    The drawing happens in a helper process, started with the reporter, that imports matplotlib and
    Optuna's plotting and importance modules (about 1.5 s of CPU here) while the trials run, and draws when
    the sweep ends. In the parent, that work held the GIL that the loop and Prefect's task engine need: over
    1,000 trivial trials it was 13% of the parent's time (py-spy --gil) and the parent, not the trials,
    set the sweep's pace.

    The sweep does not wait for its plots: `draw` hands the drawing and the artifact to a thread of their
    own and returns, and the flow run ends with the sweep's result. On a short sweep the helper's imports
    were not done by its end (they share the cores with the trials), and `sweep()` of 100 trivial trials
    waited 2-3 s for plots that nothing in the result needs. The thread publishes the artifact on the sweep's
    own flow run, in the settings of the `sweep()` call (its server), and the process waits for it at exit
    (`wait_for_plots`); the PNGs are in `folder` by then.
    """

    def __init__(self, space: SearchSpace, folder: str | Path, drawer: PlotHelper | None = None) -> None:
        """`drawer`: a plot helper started earlier (`start_drawer`, by `sweep()`); default: one started now."""
        self._space, self._folder = space, Path(folder)
        self._drawer: PlotHelper | None = drawer if drawer is not None else start_drawer()

    def __enter__(self) -> PlotDrawer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def draw(self, result: SweepSnapshot) -> None:
        """Start drawing the plots of the sweep as `result` (read from the store when it ended) holds it; a
        thread of their own publishes them when they are drawn (`wait_for_plots` waits for it)."""
        drawer, self._drawer = self._drawer, None
        if drawer is None:
            return
        curves = result.curves()
        try:
            drawing = drawer.pool.schedule(
                draw_plots, args=(result.records, self._space, result.objectives, curves, self._folder)
            )
        except Exception as exc:  # noqa: BLE001 - plots are the monitoring screen, not the sweep's result
            _log.warning("sweep %s: its plots could not be drawn (%s: %s)", result.name, type(exc).__name__, exc)
            drawer.stop()
            return
        plots = _Plots(
            result.name, drawing, drawer, comparison_of(result.records, curves, result.objectives[0]).describe()
        )
        thread = threading.Thread(target=plots.finish, daemon=True, name=f"{_PLOTS_THREAD}{result.name}")
        thread.start()
        _wait_for_plots_at_exit()

    def close(self) -> None:
        """Stop the helper process, unless it is drawing for `draw`."""
        drawer, self._drawer = self._drawer, None
        if drawer is not None:
            drawer.stop()


#: The name every plots thread's name starts with: `wait_for_plots` finds them by it.
_PLOTS_THREAD = "hpo-plots: "
_AT_EXIT = threading.Lock()
_at_exit_registered: list[bool] = []


class _Plots:
    """One sweep's plots being drawn: waits for them, stops the helper, publishes the artifact."""

    def __init__(self, name: str, drawing: Any, drawer: PlotHelper, compared: str) -> None:
        self._name, self._drawing, self._drawer, self._compared = name, drawing, drawer, compared
        context = FlowRunContext.get()
        self._flow_run_id = context.flow_run.id if context is not None and context.flow_run is not None else None
        # the settings of the sweep() call, for the thread: the API of a temporary server is set only around it
        # (not the whole context: its Prefect client is closed when the flow run ends)
        self._settings = get_settings_context()

    def finish(self) -> None:
        try:
            images: dict[str, Path] = self._drawing.result()
        except Exception as exc:  # noqa: BLE001 - plots are the monitoring screen, not the sweep's result
            _log.warning("sweep %s: its plots could not be drawn (%s: %s)", self._name, type(exc).__name__, exc)
            return
        finally:
            self._drawer.stop()
        try:
            with SettingsContext(profile=self._settings.profile, settings=self._settings.settings):
                self._publish(images)
                _wait_for_events_sent()
        except (PrefectException, httpx.HTTPError) as exc:  # the PNGs are on disk; the sweep's facts in the store
            _log.warning("sweep %s: its plots artifact could not be made (%s: %s)", self._name, type(exc).__name__, exc)

    def _publish(self, images: dict[str, Path]) -> None:
        with get_client(sync_client=True) as client:
            client.create_artifact(
                ArtifactCreate(
                    key=f"{artifact_key(self._name)}-plots",
                    type="markdown",
                    description=f"Sweep {self._name}: optimization history, parameter importance, parallel "
                    "coordinates, training curves.",
                    data=plots_markdown(self._name, images, self._compared),
                    flow_run_id=self._flow_run_id,
                )
            )


#: How long the plots thread waits for Prefect to send the artifact's event (it takes milliseconds with a
#: server that answers).
EVENTS_TIMEOUT_S = 10.0


def _wait_for_events_sent(timeout: float = EVENTS_TIMEOUT_S) -> None:
    """Wait until Prefect's events worker has sent what it queues (the artifact's `prefect.artifact.created`).

    The plots are often published at the script's exit, just before Prefect drains that worker; a drain that
    finds an event still queued logs a WARNING ("Still processing items"), which a normal run must not print.
    The worker's queue is joined from here instead, while it is still running (it sends or drops each item),
    for `timeout` seconds at most: with its server gone (stopped, unreachable) the worker retries an event
    for minutes, and the join has no timeout of its own, so it waits on a daemon thread that the exit leaves.
    """
    if should_emit_events():
        joined = threading.Thread(target=EventsWorker.instance().wait_until_empty, daemon=True, name="hpo-events")
        joined.start()
        joined.join(timeout)


def wait_for_plots(timeout: float | None = None) -> bool:
    """Wait until every sweep of this process has published its plots (`PlotDrawer.draw`); False if some
    were still being drawn after `timeout` seconds. A script's exit waits for them by itself."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name.startswith(_PLOTS_THREAD):
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return False
    return True


def _wait_for_plots_at_exit() -> None:
    """Once per process: at exit, wait for the plots still being drawn. A Ctrl-C during that wait gives them
    up at once, quietly.

    Registered with `threading._register_atexit`, not `atexit`: Prefect's services (the events worker that
    publishing an artifact emits through) register their drain there, and those hooks run, last registered
    first, before `atexit`'s and before a non-daemon thread is joined. Registered at the first drawing, after
    Prefect's, the wait runs before they drain. The hook is private to `threading`; Prefect relies on it too.
    """
    with _AT_EXIT:
        if not _at_exit_registered:
            threading._register_atexit(_plots_at_exit)  # type: ignore[attr-defined]
            _at_exit_registered.append(True)


def _plots_at_exit() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        wait_for_plots()


class PlotHelper:
    """The plot helper: one process from the fork server, started at once so that its imports overlap the
    trials (from a thread, as starting it waits for the fork server, which may still be importing).

    pebble's pool, not concurrent.futures': a sweep that ends without drawing (Ctrl-C, a failure) must stop
    the helper at once, and the standard pool waits at exit for it to finish its imports. pebble's `stop()`
    only marks the pool stopped; its process ends at `join()`, and a start still under way when the sweep
    ends creates it afterwards: `stop()` here waits for the start, then joins (each sweep that did not left
    its helper running, idle, until the process exited: one more per sweep in a notebook)."""

    def __init__(self) -> None:
        self.pool = pebble.ProcessPool(
            max_workers=1, initializer=prepare_drawing_process, initargs=(os.getpid(),), context=worker_context()
        )
        self._starting = threading.Thread(target=self._start, daemon=True, name="hpo-plot-start")
        self._starting.start()

    def _start(self) -> None:
        with contextlib.suppress(RuntimeError):  # the sweep ended (and stopped it) before it started
            self.pool.schedule(int)

    def stop(self) -> None:
        """Stop the helper process, drawing or not, and wait until it is gone."""
        self.pool.stop()  # type: ignore[no-untyped-call]
        self._starting.join(timeout=30)
        with contextlib.suppress(TimeoutError):
            self.pool.join(timeout=10)


def start_drawer() -> PlotHelper:
    """The plot helper, starting (`PlotHelper`)."""
    return PlotHelper()


def plots_folder(storage_url: str, sweep_name: str, home: Path) -> Path:
    """Where a sweep's plots go: next to a SQLite store's file, else under the prefect_hpo home."""
    url = make_url(storage_url)
    base = Path(url.database).parent if url.get_backend_name() == "sqlite" and url.database else home
    return base / "plots" / artifact_key(sweep_name)
