"""Views of an early-stopped sweep: one ranking everywhere, 6 significant digits, plots over every trial.

The store is a real SQLite trial store filled as an ASHA sweep leaves it: rungs at steps 1, 3 and 9,
most trials stopped at a rung, some of them better there than the complete ones are at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import optuna
import pytest

from prefect_hpo import Float, Objective, SqlTrialStore, TrialState
from prefect_hpo.ranking import compared_at_common_step, ordered, ranked, reported_values
from prefect_hpo.records import Outcome, TrialRecord
from prefect_hpo.reporting.artifacts import best_markdown, summary_rows
from prefect_hpo.reporting.plots import comparison_of, study_of
from prefect_hpo.reporting.plots_artifact import plots_markdown
from prefect_hpo.result import SweepResult, result_from_store
from prefect_hpo.space import SearchSpace

RUNGS = (1, 3, 9)
SPACE = {"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)}
#: number -> (how it ended, loss at each rung it reached)
ASHA_LIKE: dict[int, tuple[TrialState, list[float]]] = {
    0: (TrialState.COMPLETE, [0.90, 0.70, 0.50]),
    1: (TrialState.PRUNED, [0.123456789012]),  # the best value of the sweep, stopped at the first rung
    2: (TrialState.PRUNED, [0.95]),
    3: (TrialState.PRUNED, [0.30]),  # the same value as trial 6, which got further
    4: (TrialState.FAIL, [0.80]),  # crashed after its first report: no value, and not in the plots
    5: (TrialState.COMPLETE, [0.85, 0.60, 0.40]),
    6: (TrialState.PRUNED, [0.80, 0.30]),
    7: (TrialState.PRUNED, [1.10]),
    8: (TrialState.COMPLETE, [0.88, 0.65, 0.45]),
}
#: the ranking's order: value at the step reached, then the higher step; the failed trial last
EXPECTED_ORDER = [1, 6, 3, 5, 8, 0, 2, 7, 4]


def asha_like(url: str) -> SweepResult:
    """The sweep of ASHA_LIKE, written through the store's own calls as a sweep writes it."""
    store = SqlTrialStore(url)
    try:
        sweep_id = store.open_sweep(
            "asha-like",
            space=SearchSpace.build(SPACE).to_dict(),
            objectives=[{"metric": "loss", "mode": "min"}],
            strategy="random",
            budget={},
        )
        for number, (state, losses) in ASHA_LIKE.items():
            config = {"x": 0.123456789 + number / 100, "y": 1 - number / 10}
            trial = store.create_trial(sweep_id, number, config, f"h{number}")
            for step, loss in zip(RUNGS, losses, strict=False):
                store.add_report(trial.id, step, {"loss": loss, "acc": 1 - loss})
            last = RUNGS[len(losses) - 1]
            if state == TrialState.FAIL:
                outcome = Outcome(state, last_step=last, error="Traceback ...\nValueError: boom")
            else:
                outcome = Outcome(state, values=(losses[-1],), metrics={"loss": losses[-1]}, last_step=last)
            store.finish_trial(trial.id, outcome)
        return result_from_store(store, sweep_id)
    finally:
        store.close()


@pytest.fixture
def result(sqlite_url: str) -> SweepResult:
    return asha_like(sqlite_url)


class TestOneRanking:
    def test_the_summary_puts_the_better_stopped_trials_first(self, result: SweepResult) -> None:
        rows = summary_rows(result.records, result.objectives)
        assert [row["number"] for row in rows] == EXPECTED_ORDER
        assert [row["state"] for row in rows[:4]] == ["PRUNED", "PRUNED", "PRUNED", "COMPLETE"]
        assert [row["step"] for row in rows[1:3]] == [3, 1]  # same value: the one that got further first

    def test_the_summary_shows_six_significant_digits(self, result: SweepResult) -> None:
        first = summary_rows(result.records, result.objectives)[0]
        assert first["loss"] == 0.123457 and first["param x"] == 0.133457
        assert json.dumps(first["loss"]) == "0.123457"  # what the table artifact carries

    def test_result_top_follows_the_same_rule_and_keeps_every_digit(self, result: SweepResult) -> None:
        top = result.top(4)
        assert list(top["number"]) == EXPECTED_ORDER[:4]
        assert top["loss"].iloc[0] == 0.123456789012 and list(top["last_step"]) == [1, 3, 1, 9]
        assert [r.number for r in result.ranked()] == EXPECTED_ORDER[:-1]  # the failed trial has no rank
        assert result.best_trial is not None and result.best_trial.number == 5  # best that ran to its end

    def test_the_best_artifact_names_the_stopped_trials_ranked_ahead(self, result: SweepResult) -> None:
        text = best_markdown("asha-like", result.records, result.objectives)
        assert "Trial 5, loss = 0.4 (min)" in text
        ahead = text.split("stopped before the end:", 1)[1]
        assert "- trial 1 (PRUNED at step 1): 0.123457" in ahead
        assert ahead.index("trial 6 (PRUNED at step 3)") < ahead.index("trial 3 (PRUNED at step 1)")

    def test_maximising_reverses_the_values_but_not_the_steps(self) -> None:
        def trial(number: int, state: TrialState, value: float | None, step: int | None) -> TrialRecord:
            values = None if value is None else (value,)
            return TrialRecord(number, 1, number, {}, "h", state, values=values, last_step=step)

        records = [
            trial(0, TrialState.COMPLETE, 0.9, None),  # reported no step: ran to its end, furthest
            trial(1, TrialState.PRUNED, 0.9, 3),
            trial(2, TrialState.PRUNED, 0.95, 1),
            trial(3, TrialState.RUNNING, None, 2),
            trial(4, TrialState.PRUNED_DUPLICATE, 0.99, None),  # stands for another trial: no rank
            trial(5, TrialState.FAIL, float("nan"), 3),
        ]
        assert [r.number for r in ranked(records, Objective("acc", "max"))] == [2, 0, 1]
        assert [r.number for r in ordered(records, Objective("acc", "max"))] == [2, 0, 1, 3, 4, 5]


class TestPlotsOverEveryTrial:
    def test_the_plotted_study_holds_every_ranked_trial_at_the_common_step_by_stored_number(
        self, result: SweepResult
    ) -> None:
        objective = result.objectives[0]
        comparison = comparison_of(result.records, result.curves(), objective)
        assert comparison.step == 1  # the last step every ranked trial reached: the first rung
        study = study_of(result.records, SearchSpace.build(SPACE), objective, comparison)
        plotted = {t.number: t.value for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
        at_first_rung = {n: losses[0] for n, (state, losses) in ASHA_LIKE.items() if state != TrialState.FAIL}
        assert plotted == at_first_rung  # complete and stopped trials, numbered as stored, valued at step 1
        by_number = {r.number: r for r in result.records}
        assert all(
            t.params == by_number[t.number].config for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
        )
        assert comparison.describe() == "at step 1, the last step all 8 trials reached (3 complete, 5 stopped early)"

    def test_optunas_history_plot_draws_them_at_their_stored_numbers(self, result: SweepResult) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import optuna.visualization.matplotlib as ovm

        objective = result.objectives[0]
        study = study_of(
            result.records,
            SearchSpace.build(SPACE),
            objective,
            comparison_of(result.records, result.curves(), objective),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            axes = ovm.plot_optimization_history(study)
        xs = sorted(int(x) for x in axes.collections[0].get_offsets()[:, 0])
        plt.close(axes.get_figure())
        assert xs == [0, 1, 2, 3, 5, 6, 7, 8]

    def test_the_plots_artifact_says_which_step(self, result: SweepResult, tmp_path: Path) -> None:
        png = tmp_path / "history.png"
        png.write_bytes(b"\x89PNG")
        described = comparison_of(result.records, result.curves(), result.objectives[0]).describe()
        text = plots_markdown("asha-like", {"history": png}, described)
        assert "History, importance and parallel coordinates: at step 1, the last step all 8 trials" in text

    def test_a_sweep_without_early_stopping_compares_final_values(self) -> None:
        records = [
            TrialRecord(n, 1, n, {"x": n / 10}, "h", state, values=values, last_step=3)
            for n, state, values in [
                (0, TrialState.COMPLETE, (0.5,)),
                (1, TrialState.FAIL, None),
                (2, TrialState.COMPLETE, (0.25,)),
            ]
        ]
        comparison = compared_at_common_step(records, {0: [(3, 0.7)], 2: [(3, 0.9)]}, Objective("loss"))
        assert comparison.step is None and comparison.values == {0: 0.5, 2: 0.25}  # the returned values
        assert comparison.describe() == "final values of 2 complete trials"

    def test_global_modes_take_the_best_reported_up_to_the_step(self) -> None:
        records = [
            TrialRecord(0, 1, 0, {}, "h", TrialState.COMPLETE, values=(0.1,), last_step=4),
            TrialRecord(1, 1, 1, {}, "h", TrialState.PRUNED, values=(0.6,), last_step=2),
        ]
        reports = reported_values([], "loss") | {0: [(1, 0.3), (2, 0.5), (4, 0.1)], 1: [(1, 0.2), (2, 0.6)]}
        assert compared_at_common_step(records, reports, Objective("loss", "min_global")).values == {0: 0.3, 1: 0.2}
        assert compared_at_common_step(records, reports, Objective("loss", "min")).values == {0: 0.5, 1: 0.6}


#: Draws the plots of the ASHA-like store in a fresh interpreter where scikit-learn cannot be imported (as
#: after a plain install) and reports what was drawn, the importances, and every warning and log record.
WITHOUT_SKLEARN = textwrap.dedent(
    """
    import json, logging, sys, warnings
    sys.modules["sklearn"] = None  # `import sklearn` now raises ImportError, as where it is not installed
    logged = []

    class Keep(logging.Handler):
        def emit(self, record):
            logged.append(f"{record.name} {record.levelname} {record.getMessage()}")

    logging.getLogger().addHandler(Keep(level=logging.WARNING))
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        import optuna
        from tests.reporting.test_early_stopped import SPACE, asha_like
        from prefect_hpo.reporting.plots import comparison_of, draw_plots, importance_evaluator, study_of
        from prefect_hpo.space import SearchSpace

        result = asha_like(sys.argv[1])
        space, curves, objective = SearchSpace.build(SPACE), result.curves(), result.objectives[0]
        images = draw_plots(result.records, space, result.objectives, curves, sys.argv[2])
        study = study_of(result.records, space, objective, comparison_of(result.records, curves, objective))
        importances = optuna.importance.get_param_importances(study, evaluator=importance_evaluator())
    print(json.dumps({
        "images": sorted(images),
        "importances": importances,
        "sklearn": sys.modules.get("sklearn") is not None,
        "warnings": [str(w.message) for w in warned if "prefect_hpo" in w.filename or "optuna" in w.filename],
        "logged": logged,
    }))
    """
)


def test_importances_need_no_scikit_learn_and_warn_nothing(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", WITHOUT_SKLEARN, f"sqlite:///{tmp_path / 'hpo.db'}", str(tmp_path / "plots")],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["images"] == ["curves", "history", "importance", "parallel"]
    assert set(seen["importances"]) == {"x", "y"} and seen["sklearn"] is False
    assert seen["warnings"] == [] and seen["logged"] == []
