"""Failing fast: which errors are alike, and when the watch of a run's first trials trips."""

from __future__ import annotations

import math
import traceback

import pytest

from prefect_hpo import Budget
from prefect_hpo.errors import BudgetError, TooManyFailedTrials, TrialsFailAlike
from prefect_hpo.failures import FailFast, error_text, failure_signature
from prefect_hpo.records import TrialRecord, TrialState


def _traceback_of(exc: ValueError | RuntimeError) -> str:
    try:
        raise exc
    except (ValueError, RuntimeError):
        return traceback.format_exc()


def _ended(
    number: int, state: TrialState, error: str | None = None, values: tuple[float, ...] | None = None
) -> TrialRecord:
    return TrialRecord(number, 1, number, {}, "h", state, error=error, values=values)


class TestErrorText:
    def test_a_traceback_gives_its_last_exception(self) -> None:
        text = _traceback_of(ValueError("lr=0.31 diverged"))
        assert text.startswith("Traceback") and error_text(text) == "ValueError: lr=0.31 diverged"

    def test_a_chained_traceback_gives_the_exception_raised_last(self) -> None:
        try:
            try:
                raise KeyError("a")
            except KeyError as inner:
                raise RuntimeError("loading the data failed\nsecond line") from inner
        except RuntimeError:
            text = traceback.format_exc()
        assert error_text(text) == "RuntimeError: loading the data failed\nsecond line"

    def test_a_message_that_is_no_traceback_is_kept_whole(self) -> None:
        assert error_text("  objective 'loss' is nan  ") == "objective 'loss' is nan"


class TestFailureSignature:
    def test_numbers_and_addresses_do_not_make_errors_differ(self) -> None:
        a = _traceback_of(ValueError("lr=0.0031 diverged at step 12 for <Net at 0x7f3a2c>"))
        b = _traceback_of(ValueError("lr=8.7e-05 diverged at step 3 for <Net at 0x55d0e1>"))
        assert (
            failure_signature(a) == failure_signature(b) == "ValueError: lr=# diverged at step # for <Net at <address>>"
        )

    def test_another_type_or_message_differs(self) -> None:
        base = failure_signature(_traceback_of(ValueError("diverged")))
        assert failure_signature(_traceback_of(RuntimeError("diverged"))) != base
        assert failure_signature(_traceback_of(ValueError("no such file"))) != base

    def test_digits_inside_names_stay(self) -> None:
        assert failure_signature("metric 'f1' missing from layer2") == "metric 'f1' missing from layer2"


class TestFailFast:
    def test_trips_after_k_alike_failures(self) -> None:
        watch = FailFast(3)
        for n in range(3):
            assert not watch.tripped
            watch.saw(_ended(n, TrialState.FAIL, f"ValueError: x={n}.5 diverged"))
        assert watch.tripped and [t.number for t in watch.alike] == [0, 1, 2]
        error = watch.error("sw")
        assert isinstance(error, TrialsFailAlike) and isinstance(error, TooManyFailedTrials)
        assert "3 trials (0, 1, 2) failed with the same error before any trial succeeded" in str(error)
        assert "ValueError: x=0.5 diverged" in str(error) and "Budget(fail_fast=None)" in str(error)
        assert watch.reason == "3 trials failed with the same error before any succeeded: ValueError: x=0.5 diverged"

    def test_a_success_stands_it_down_for_the_run(self) -> None:
        watch = FailFast(2)
        watch.saw(_ended(0, TrialState.FAIL, "ValueError: a"))
        watch.saw(_ended(1, TrialState.COMPLETE, values=(0.1,)))
        for n in range(2, 10):
            watch.saw(_ended(n, TrialState.FAIL, "ValueError: a"))
        assert not watch.tripped

    @pytest.mark.parametrize("state", [TrialState.PRUNED, TrialState.PAUSED])
    def test_an_early_stopped_or_paused_trial_is_a_success(self, state: TrialState) -> None:
        watch = FailFast(2)
        watch.saw(_ended(0, state, values=(0.1,)))
        watch.saw(_ended(1, TrialState.FAIL, "E"))
        watch.saw(_ended(2, TrialState.FAIL, "E"))
        assert not watch.tripped

    def test_a_different_error_starts_the_count_again(self) -> None:
        watch = FailFast(3)
        for n, error in enumerate(["A: 1", "A: 2", "B: 1", "A: 3", "A: 4"]):
            watch.saw(_ended(n, TrialState.FAIL, error))
        assert not watch.tripped and [t.number for t in watch.alike] == [3, 4]
        watch.saw(_ended(5, TrialState.FAIL, "A: 5"))
        assert watch.tripped

    def test_a_nan_objective_neither_counts_nor_resets(self) -> None:
        watch = FailFast(2)
        watch.saw(_ended(0, TrialState.FAIL, "E"))
        watch.saw(_ended(1, TrialState.FAIL, "objective 'loss' is nan, not a finite number", values=(math.nan,)))
        assert not watch.tripped
        watch.saw(_ended(2, TrialState.FAIL, "E"))
        assert watch.tripped

    @pytest.mark.parametrize("limit", [0, None])
    def test_zero_or_none_never_trips(self, limit: int | None) -> None:
        watch = FailFast(limit)
        for n in range(50):
            watch.saw(_ended(n, TrialState.FAIL, "E"))
        assert not watch.tripped

    def test_a_long_error_is_cut_in_the_message(self) -> None:
        watch = FailFast(1)
        watch.saw(_ended(0, TrialState.FAIL, "E: " + "x" * 5000))
        assert len(str(watch.error("sw"))) < 1500


class TestBudgetFailFast:
    def test_default_is_three(self) -> None:
        assert Budget().fail_fast == 3 and Budget.from_dict({"max_trials": 5}).fail_fast == 3

    @pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
    def test_bad_values_name_the_field_and_the_fix(self, bad: object) -> None:
        with pytest.raises(BudgetError, match=r"budget\.fail_fast must be a number of trials >= 1 .*0 / None"):
            Budget(fail_fast=bad)  # type: ignore[arg-type]

    def test_the_deployment_form_carries_it(self) -> None:
        from prefect_hpo.spec import BudgetSpec

        assert BudgetSpec().to_budget().fail_fast == 3
        assert BudgetSpec(fail_fast=None).to_budget().fail_fast is None
        assert BudgetSpec(fail_fast=5).to_budget() == Budget(fail_fast=5)
