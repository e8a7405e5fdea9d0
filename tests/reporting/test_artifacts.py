"""A sweep's Prefect artifacts: built from the store, published to a real Prefect (ephemeral) server."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from prefect_hpo import Budget, Float, Objective, PrefectHPOError, SqlTrialStore, SweepResult, TrialState, sweep
from prefect_hpo.budget import BudgetStatus, Usage
from prefect_hpo.records import TrialRecord
from prefect_hpo.reporting.artifacts import artifact_key, best_markdown, budget_markdown, summary_rows


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
        record(3, TrialState.PRUNED, (0.1,), lr=0.4, layers=[3]),  # pruned values do not rank
    ]
    records[1] = replace(records[1], error="Traceback ...\nValueError: boom")
    rows = summary_rows(records, (Objective("loss"),), ui_url="http://ui:4200")
    assert [r["number"] for r in rows] == [2, 0, 1, 3]
    assert rows[0]["loss"] == 0.2 and rows[0]["param layers"] == "[3]"
    assert rows[2]["reason"] == "ValueError: boom"
    maxed = summary_rows(records, (Objective("loss", "max"),))
    assert [r["number"] for r in maxed][:2] == [0, 2]


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


@pytest.mark.prefect
def test_a_sweep_keeps_its_artifacts_current_and_ends_with_a_final_version(sqlite_url: str) -> None:
    def train(config: dict[str, float]) -> float:
        return (config["x"] - 0.3) ** 2

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
        artifact_interval=0,  # every trial's end publishes
    )
    summaries = artifacts("artifacts-now-summary", result)
    assert len(summaries) == 6 + 1  # one per trial's end, and the final one
    table = json.loads(summaries[0].data)
    best_first = sorted(result.records, key=lambda r: r.value or 0)
    assert [row["number"] for row in table] == [r.number for r in best_first]
    assert all(
        row["state"] == "COMPLETE" and row["run"] == r.task_run_id for row, r in zip(table, best_first, strict=True)
    )
    best = artifacts("artifacts-now-best", result)[0].data
    assert json.loads(best.split("```json\n", 1)[1].split("```", 1)[0]) == result.best_config
    (progress,) = artifacts("artifacts-now-progress", result)  # updated in place, not versioned
    assert math.isclose(float(progress.data), 100.0)
    budget = artifacts("artifacts-now-budget", result)[0].data
    assert "| trials | 6 | 6 | 0 |" in budget and "Ended: max_trials=6 reached." in budget
    assert summaries[0].flow_run_id is not None  # attached to the sweep's flow run


@pytest.mark.prefect
def test_updates_are_rate_limited_but_the_last_one_is_always_made(sqlite_url: str) -> None:
    result = sweep(
        lambda config: config["x"],
        {"x": Float(0.0, 1.0)},
        "loss",
        "random",
        Budget(max_trials=8, max_concurrent=2),
        storage=sqlite_url,
        name="rate-limited",
        workers="threads",
        artifact_interval=3600,
    )
    summaries = artifacts("rate-limited-summary", result)
    assert len(summaries) == 2  # the first trial's end, then the sweep's end
    assert len(json.loads(summaries[0].data)) == len(result.records) == 8


def test_a_bad_interval_is_named(sqlite_url: str) -> None:
    with pytest.raises(PrefectHPOError, match="artifact_interval must be a number of seconds"):
        sweep(lambda c: c["x"], {"x": Float(0.0, 1.0)}, storage=sqlite_url, artifact_interval=-1)
