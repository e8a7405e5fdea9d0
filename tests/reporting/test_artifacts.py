"""A sweep's Prefect artifacts: built from the store, published to a real Prefect (ephemeral) server."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_hpo import (
    Budget,
    Float,
    Objective,
    PrefectHPOError,
    SqlTrialStore,
    SweepResult,
    TrialState,
    sweep,
    wait_for_plots,
)
from prefect_hpo.budget import BudgetStatus, Usage
from prefect_hpo.records import Outcome, TrialRecord
from prefect_hpo.reporting.artifacts import (
    ArtifactReporter,
    DeviceUse,
    artifact_key,
    best_markdown,
    budget_markdown,
    summary_rows,
)
from prefect_hpo.trial import Trial
from tests.servers import free_port


def record(number: int, state: TrialState, values: tuple[float, ...] | None, **config: Any) -> TrialRecord:
    return TrialRecord(number, 1, number, config, f"h{number}", state, values=values)


def artifacts(key: str, result: SweepResult) -> list[Any]:
    """Every version of artifact `key` made by the sweep's flow run, newest first."""
    store = SqlTrialStore(result.storage)
    flow_run_id = store.sweep(store.sweep_id(result.name))["flow_run_id"]
    store.close()
    # the Prefect test home is kept between runs: only this run's artifacts count
    only_this_run = ArtifactFilter(
        key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])
    )
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=only_this_run, sort=ArtifactSort.CREATED_DESC)


def test_keys_follow_prefects_rules_whatever_the_name() -> None:
    assert artifact_key("Digits MLP_v2.1") == "digits-mlp-v2-1"
    assert artifact_key("--x--") == "x"
    assert artifact_key("___") == "sweep"


def test_summary_is_best_first_and_failures_say_why() -> None:
    records = [
        record(0, TrialState.COMPLETE, (0.5,), lr=0.1, layers=[1, 2]),
        record(1, TrialState.FAIL, None, lr=0.2, layers=[1]),
        record(2, TrialState.COMPLETE, (0.2,), lr=0.3, layers=[3]),
        record(3, TrialState.PRUNED, (0.1,), lr=0.4, layers=[3]),  # stopped early: ranked by its value too
    ]
    records[1] = replace(records[1], error="Traceback ...\nValueError: boom")
    rows = summary_rows(records, (Objective("loss"),), ui_url="http://ui:4200")
    assert [r["number"] for r in rows] == [3, 2, 0, 1]
    assert rows[1]["loss"] == 0.2 and rows[1]["param layers"] == "[3]"
    assert rows[3]["reason"] == "ValueError: boom"
    maxed = summary_rows(records, (Objective("loss", "max"),))
    assert [r["number"] for r in maxed] == [0, 2, 3, 1]


def test_a_long_summary_keeps_the_best_rows() -> None:
    records = [record(n, TrialState.COMPLETE, (float(1000 - n),), x=n) for n in range(1000)]
    rows = summary_rows(records, (Objective("loss"),), max_rows=50)
    assert len(rows) == 50 and [r["number"] for r in rows] == list(range(999, 949, -1))


def test_best_markdown_is_copyable_json_and_shows_the_pareto_front() -> None:
    objectives = (Objective("loss"), Objective("cost"))
    records = [
        record(0, TrialState.COMPLETE, (0.5, 1.0), lr=0.1),
        record(1, TrialState.COMPLETE, (0.2, 3.0), lr=0.2),
        record(2, TrialState.COMPLETE, (0.6, 2.0), lr=0.3),  # dominated by trial 0
    ]
    text = best_markdown("s", records, objectives)
    block = text.split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(block) == {"lr": 0.2}
    front = text.split("## Pareto front", 1)[1]
    assert "| 0 |" in front and "| 1 |" in front and "| 2 |" not in front
    assert "No trial has completed yet" in best_markdown("s", [record(0, TrialState.FAIL, None)], objectives)


def test_budget_markdown_lists_what_is_left() -> None:
    status = BudgetStatus(Budget(max_trials=10, time_limit=60), Usage(4, 3, 1, 1, 15.0, 12.0))
    text = budget_markdown("s", status, "max_trials=10 reached")
    assert "| trials | 10 | 4 | 6 |" in text and "| time_s | 60 | 15 | 45 |" in text
    assert "Ended: max_trials=10 reached." in text
    assert "GPUs" not in text  # trials placed elsewhere: nothing to say of this machine's devices


def test_the_budget_shows_which_gpus_are_busy_and_the_summary_where_each_trial_ran() -> None:
    use = DeviceUse(["0", "1"])
    status = BudgetStatus(Budget(max_trials=10), Usage(2, 0, 0, 2, 1.0, 1.0))
    use.started(replace(record(3, TrialState.RUNNING, None), devices=("0",)))
    use.started(replace(record(4, TrialState.RUNNING, None), devices=("0",)))
    use.ended(replace(record(3, TrialState.COMPLETE, (0.1,)), devices=("0",)))
    text = budget_markdown("s", status, None, use.now())
    assert "GPUs: 1 busy, 1 idle." in text and "| 0 | 4 |" in text and "| 1 | idle |" in text
    placed = replace(record(5, TrialState.COMPLETE, (0.3,)), worker="gpu-host-2:42", devices=("1", "2"), cpu_threads=4)
    (row,) = summary_rows([placed], (Objective("loss"),))
    assert (row["host"], row["GPUs"], row["threads"]) == ("gpu-host-2", "1,2", 4)


@pytest.mark.prefect
def test_a_sweep_against_a_real_server_leaves_every_artifact_readable(ui_server: str, sqlite_url: str) -> None:
    def train(config: dict[str, float], trial: Trial) -> float:
        for step in (1, 2):
            trial.report(step, loss=(config["x"] - 0.3) ** 2 + 1.0 / step)
        return (config["x"] - 0.3) ** 2

    with temporary_settings({PREFECT_API_URL: ui_server}):
        result = sweep(
            train,
            {"x": Float(0.0, 1.0)},
            "loss",
            "random",
            Budget(max_trials=6, max_concurrent=2),
            storage=sqlite_url,
            name="Artifacts Now",
            seed=1,
            workers="threads",
            artifact_interval=0,  # every trial's end updates them
        )
        assert wait_for_plots(timeout=120)  # sweep() returned with its result; the plots follow from a thread
        parts = {k: artifacts(f"artifacts-now-{k}", result) for k in ("summary", "best", "budget", "progress", "plots")}
    # all on the sweep's own flow run, the plots too (published after that flow run ended)
    assert len({v[0].flow_run_id for v in parts.values()}) == 1 and parts["plots"][0].flow_run_id is not None
    ui = ui_server.removesuffix("/api")  # each row links to its trial's task run in this server's UI
    # one artifact per key in this run, updated in place to the final state
    assert {k: len(v) for k, v in parts.items()} == dict.fromkeys(parts, 1)
    table = json.loads(parts["summary"][0].data)
    best_first = sorted(result.records, key=lambda r: r.value or 0)
    assert [row["number"] for row in table] == [r.number for r in best_first]
    assert all(
        row["state"] == "COMPLETE" and row["run"] == f"{ui}/runs/task-run/{r.task_run_id}"
        for row, r in zip(table, best_first, strict=True)
    )
    best = parts["best"][0].data
    assert json.loads(best.split("```json\n", 1)[1].split("```", 1)[0]) == result.best_config
    assert math.isclose(float(parts["progress"][0].data), 100.0)
    budget = parts["budget"][0].data
    assert "| trials | 6 | 6 | 0 |" in budget and "Ended: max_trials=6 reached." in budget
    assert parts["plots"][0].data.count("data:image/png;base64,") == 4
    assert all(v[0].flow_run_id is not None for v in parts.values())  # attached to the sweep's flow run


@pytest.mark.prefect
def test_updates_are_rate_limited_and_the_last_one_is_always_made(sqlite_url: str) -> None:
    store = SqlTrialStore(sqlite_url)
    sid = store.open_sweep("rate", space={}, objectives=[{"metric": "loss", "mode": "min"}], strategy="-", budget={})
    now = [0.0]
    status = BudgetStatus(Budget(max_trials=5), Usage(5, 5, 0, 0, 1.0, 1.0))

    @flow
    def publish() -> list[int]:
        reporter = ArtifactReporter(store, sid, "rate", (Objective("loss"),), min_interval=5.0, clock=lambda: now[0])
        counts = []
        for i in range(5):
            record = store.create_trial(sid, i, {"x": i}, f"h{i}")
            store.finish_trial(record.id, Outcome(TrialState.COMPLETE, values=(float(i),)))
            now[0] = i * 2.0  # trials end 2 s apart: every third end is due (0, 6... seconds)
            reporter.trial_ended(record, status)
            counts.append(reporter.published)
        reporter.sweep_ended(status, "max_trials=5 reached")
        counts.append(reporter.published)
        return counts

    assert publish() == [1, 1, 1, 2, 2, 3]  # at 0 s and 6 s, then always at the end
    with get_client(sync_client=True) as client:
        (summary,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["rate-summary"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert [row["number"] for row in json.loads(summary.data)] == [0, 1, 2, 3, 4]  # the final state


def test_a_bad_interval_is_named(sqlite_url: str) -> None:
    with pytest.raises(PrefectHPOError, match="artifact_interval must be a number of seconds"):
        sweep(lambda c: c["x"], {"x": Float(0.0, 1.0)}, storage=sqlite_url, artifact_interval=-1)


PLOT_PARENT = """
import os, sys
from prefect_hpo import Float, SearchSpace
from prefect_hpo.reporting.plots_artifact import PlotDrawer

if __name__ == "__main__":
    reporter = PlotDrawer(SearchSpace.build({"x": Float(0, 1)}), sys.argv[1])
    print(reporter._drawer.pool.schedule(os.getpid).result(), flush=True)  # the helper process, started and ready
    sys.stdin.read()  # until the test kills this process
"""


def test_the_plot_helper_process_leaves_with_a_killed_parent(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PLOT_PARENT)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "plots")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        helper = psutil.Process(int(parent.stdout.readline()))
        assert helper.is_running() and helper.pid != parent.pid
        parent.kill()
        parent.wait(timeout=30)
        helper.wait(timeout=30)  # psutil.TimeoutExpired if the helper outlives its parent
        assert not helper.is_running()
    finally:
        parent.kill()


AT_EXIT_SCRIPT = """
import threading
from prefect_hpo.reporting.plots_artifact import _PLOTS_THREAD, _wait_for_plots_at_exit

# plots that never finish: the exit waits for them until a Ctrl-C gives them up
threading.Thread(target=threading.Event().wait, name=_PLOTS_THREAD + "slow", daemon=True).start()
_wait_for_plots_at_exit()
print("ended", flush=True)
"""


def test_a_ctrl_c_while_the_exit_waits_for_plots_ends_the_process_at_once_and_quietly(tmp_path: Path) -> None:
    script = tmp_path / "waits.py"
    script.write_text(AT_EXIT_SCRIPT)
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ended"  # the script's body is done: its exit waits now
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1)  # ... and keeps waiting for the plots
        os.kill(proc.pid, signal.SIGINT)
        start = time.monotonic()
        said = proc.communicate(timeout=30)[0]
        assert time.monotonic() - start < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in said and "KeyboardInterrupt" not in said, said


GONE_SCRIPT = """
import sys, time
from prefect.events import emit_event
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_hpo.reporting.plots_artifact import _wait_for_events_sent

with temporary_settings({PREFECT_API_URL: sys.argv[1]}):
    emit_event("prefect-hpo.test.unsendable", resource={"prefect.resource.id": "prefect-hpo.test"})
    start = time.monotonic()
    _wait_for_events_sent(timeout=2)
    print(f"waited {time.monotonic() - start:.1f}", flush=True)
"""


def test_waiting_for_the_plots_event_to_be_sent_gives_up_when_the_server_is_gone(tmp_path: Path) -> None:
    """A sweep whose Prefect server is gone when its plots are published (stopped, unreachable) must not hang
    at exit: Prefect's events worker retries an event it cannot send, and joining its queue has no timeout."""
    script = tmp_path / "gone.py"
    script.write_text(GONE_SCRIPT)
    gone = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(script), gone], capture_output=True, text=True, env=env, timeout=120)
    waited = [line for line in done.stdout.splitlines() if line.startswith("waited ")]
    assert waited and float(waited[0].split()[1]) < 4, done.stdout + done.stderr[-2000:]
    assert done.returncode == 0 and time.monotonic() - start < 60  # Prefect's own drain at exit gives up too
