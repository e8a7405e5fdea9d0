"""The trial runtime: every way a training function can end becomes the right Outcome."""

from __future__ import annotations

import math
import signal
import sys
import threading
from fractions import Fraction
from typing import Any

import pytest

from prefect_hpo.objective import Objective
from prefect_hpo.records import TrialState
from prefect_hpo.store import SqlTrialStore
from prefect_hpo.trial import Trial
from tests.trial_runs import open_store_and_trial, run


@pytest.fixture
def store_and_trial(sqlite_url: str) -> tuple[SqlTrialStore, int]:
    return open_store_and_trial(sqlite_url)


def test_bare_number_and_dict(store_and_trial: tuple[SqlTrialStore, int]) -> None:
    out = run(store_and_trial, lambda c, t: 0.25)
    assert out.state == TrialState.COMPLETE and out.values == (0.25,)
    out = run(store_and_trial, lambda c, t: {"loss": 1, "acc": 0.5})
    assert out.values == (1.0,) and out.metrics == {"loss": 1.0, "acc": 0.5}


def test_returning_nothing_uses_the_last_report(store_and_trial: tuple[SqlTrialStore, int]) -> None:
    def train(config: dict, trial: Trial) -> None:
        for step in range(3):
            trial.report(step, loss=3.0 - step)

    out = run(store_and_trial, train)
    assert out.state == TrialState.COMPLETE and out.values == (1.0,) and out.last_step == 2
    store, _ = store_and_trial
    assert len(store.reports(1)) == 3


@pytest.mark.parametrize(
    ("result", "needle"),
    [
        ("good", "returned 'good' (type str), not a number or a dict of numbers; return {'loss': 0.25} or 0.25"),
        ({"loss": "low"}, "'loss': 'low' (type str), not a number; put only numbers in the result dict"),
        ({"acc": 0.9}, "returned metrics ['acc'] but the objective asks for 'loss'"),
        ([0.1], "(type list), not a number or a dict of numbers; return {'loss': 0.25} or 0.25"),
        (None, "returned None and reported no metrics, but the objective asks for 'loss'"),
    ],
)
def test_bad_results_fail_with_a_reason(store_and_trial: tuple[SqlTrialStore, int], result: Any, needle: str) -> None:
    out = run(store_and_trial, lambda c, t: result)
    assert out.state == TrialState.FAIL and needle in (out.error or "")


def test_a_string_result_names_its_type_and_the_fix(store_and_trial: tuple[SqlTrialStore, int]) -> None:
    out = run(store_and_trial, lambda c, t: "0.53", objectives=(Objective("val_loss"),))
    assert out.state == TrialState.FAIL
    assert out.error == (
        "the training function returned '0.53' (type str), not a number or a dict of numbers; "
        "return {'val_loss': 0.25} or 0.25 (the number, not a string of it: float(text))"
    )


def test_nan_and_inf_objectives_fail(store_and_trial: tuple[SqlTrialStore, int]) -> None:
    for bad in (math.nan, math.inf):
        out = run(store_and_trial, lambda c, t, bad=bad: bad)
        assert out.state == TrialState.FAIL and "not a finite number" in (out.error or "")


def test_exception_keeps_its_traceback(store_and_trial: tuple[SqlTrialStore, int]) -> None:
    def train(config: dict, trial: Trial) -> float:
        trial.report(1, loss=0.5)
        raise RuntimeError("diverged at epoch 1")

    out = run(store_and_trial, train)
    assert out.state == TrialState.FAIL and "RuntimeError: diverged at epoch 1" in (out.error or "")
    assert "Traceback" in (out.error or "") and out.last_step == 1


def test_multi_objective_needs_a_dict(store_and_trial: tuple[SqlTrialStore, int]) -> None:
    objs = (Objective("loss"), Objective("acc", "max"))
    out = run(store_and_trial, lambda c, t: 0.5, objectives=objs)
    assert out.state == TrialState.FAIL and "2 objectives" in (out.error or "")
    out = run(store_and_trial, lambda c, t: {"loss": 0.5, "acc": 0.7}, objectives=objs)
    assert out.values == (0.5, 0.7)


def _exits(code: object) -> Any:
    def train(config: dict, trial: Trial) -> float:
        trial.report(1, loss=0.5)
        sys.exit(code)  # type: ignore[arg-type]

    return train


@pytest.mark.parametrize(
    ("code", "call"),
    [
        (0, "sys.exit(0)"),
        (3, "sys.exit(3)"),
        (None, "sys.exit()"),
        ("training is over", "sys.exit('training is over')"),
    ],
)
def test_sys_exit_in_the_training_function_fails_its_trial(
    store_and_trial: tuple[SqlTrialStore, int], code: object, call: str
) -> None:
    out = run(store_and_trial, _exits(code))
    assert out.state == TrialState.FAIL and out.last_step == 1
    assert out.error is not None and "Traceback" in out.error  # the line that called it is in the store
    assert out.error.splitlines()[-1].startswith(f"the training function called {call}; ")


def _raises_keyboard_interrupt(config: dict, trial: Trial) -> float:
    raise KeyboardInterrupt


def _in_a_thread(store_and_trial: tuple[SqlTrialStore, int], fn: Any) -> Any:
    outcomes: list[Any] = []
    thread = threading.Thread(target=lambda: outcomes.append(run(store_and_trial, fn)))
    thread.start()
    thread.join()
    return outcomes[0] if outcomes else None


def test_a_keyboard_interrupt_the_training_function_raises_fails_its_trial(
    store_and_trial: tuple[SqlTrialStore, int],
) -> None:
    """In a trial thread no Ctrl-C can arrive (Python delivers signals to the main thread), and in a worker
    process, which ignores SIGINT, neither: the KeyboardInterrupt is the training function's own."""
    out = _in_a_thread(store_and_trial, _raises_keyboard_interrupt)
    assert out is not None and out.state == TrialState.FAIL
    assert (out.error or "").splitlines()[-1].startswith("the training function raised KeyboardInterrupt; ")
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a worker process (`follow_parent`)
    try:
        out = run(store_and_trial, _raises_keyboard_interrupt)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert out.state == TrialState.FAIL and "the training function raised KeyboardInterrupt" in (out.error or "")


def test_a_keyboard_interrupt_that_may_be_a_ctrl_c_is_not_swallowed(store_and_trial: tuple[SqlTrialStore, int]) -> None:
    """In the main thread with Python's own SIGINT handler (a trial flow run on a work pool), a
    KeyboardInterrupt may be a person's Ctrl-C: it goes on up as one."""
    # set, not assumed: a shell starts a background job (`pytest ... &`) with SIGINT ignored, which Python keeps
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run(store_and_trial, _raises_keyboard_interrupt)
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(
    ("result", "needle"),
    [
        (10**400, "the training function returned an int of 401 digits, "),
        (-(10**400), "the training function returned a negative int of 401 digits, "),
        ({"loss": 10**400}, "the training function returned 'loss': an int of 401 digits, "),
        (Fraction(10**400, 3), "the training function returned Fraction("),
        (10**5000, "the training function returned an int of 5001 digits, "),  # too long even for str()
    ],
    ids=["int", "negative-int", "dict", "fraction", "int-past-str-limit"],
)
def test_a_result_too_large_for_a_float_fails_its_trial(
    store_and_trial: tuple[SqlTrialStore, int], result: Any, needle: str
) -> None:
    out = run(store_and_trial, lambda c, t: result)
    assert out.state == TrialState.FAIL and needle in (out.error or ""), out.error
    assert "too large for a float" in (out.error or "")


def test_a_cuda_out_of_memory_error_fails_its_trial_with_the_device_named(
    store_and_trial: tuple[SqlTrialStore, int],
) -> None:
    class OutOfMemoryError(RuntimeError):  # torch.cuda.OutOfMemoryError's name, without torch's CUDA build
        pass

    def train(config: dict, trial: Trial) -> float:
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity)")

    out = run(store_and_trial, train, devices=("2",))
    assert out.state == TrialState.FAIL and out.devices == ("2",)
    assert (out.reason or "").startswith("out of GPU memory on device 2: ask for a larger share")
    plain = run(store_and_trial, lambda c, t: 1 / 0)
    assert plain.state == TrialState.FAIL and plain.reason is None
