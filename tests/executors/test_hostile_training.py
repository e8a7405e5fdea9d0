"""A training function cannot end, hang or fake-succeed the sweep: real sweeps in a child process, 4 slots.

Each worker kind runs one grid sweep in which some trials call sys.exit(0) or sys.exit(3), raise
KeyboardInterrupt or SystemExit, or return 10**400, inf or NaN, between trials that work. Each of those is
its own trial's FAIL with a reason that says what happened, its task run ends Failed, the other trials
complete, `sweep()` returns to the script (which exits as it would after any sweep), and nothing of the
child's process group is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from prefect_hpo import SqlTrialStore, TrialState
from tests.hostile_train import CASES
from tests.processes import group_left

pytestmark = pytest.mark.prefect

ROOT = Path(__file__).resolve().parents[2]
RETURNED = "sweep() returned:"

CHILD = textwrap.dedent(
    f"""
    import sys
    from prefect_hpo import Budget, Categorical, sweep
    from tests.hostile_train import CASES, hostile

    if __name__ == "__main__":
        result = sweep(hostile, {{"case": Categorical(CASES)}}, "loss", "grid",
                       Budget(max_trials=len(CASES), max_concurrent=4), storage=sys.argv[1], name="hostile",
                       workers=sys.argv[2])
        print({RETURNED!r}, len(result.records), "trials", flush=True)
    """
)

#: What the store says of each misbehaving trial (its error, which the task run's Failed state quotes).
REASONS = {
    "exit0": "the training function called sys.exit(0)",
    "exit3": "the training function called sys.exit(3)",
    "keyboard": "the training function raised KeyboardInterrupt",
    "systemexit": "the training function called sys.exit('training is over')",
    "huge": "the training function returned an int of 401 digits, too large for a float",
    "inf": "objective 'loss' is inf, not a finite number",
    "nan": "objective 'loss' is nan, not a finite number",
}


def _task_run_states(flow_run_id: str, expected: int, within: float = 60) -> dict[str, Any]:
    """The flow run's task runs by id, once all `expected` are final (the server writes them from events)."""
    deadline = time.monotonic() + within
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])))
            final = {str(t.id): t.state for t in runs if t.state is not None and t.state.is_final()}
            if len(final) >= expected or time.monotonic() > deadline:
                return final
            time.sleep(0.2)


@pytest.mark.parametrize("workers", ["processes", "threads"])
def test_a_training_function_cannot_end_hang_or_fake_succeed_the_sweep(
    workers: str, sqlite_url: str, tmp_path: Path
) -> None:
    output = tmp_path / "child.out"
    with open(output, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, sqlite_url, workers],
            cwd=ROOT,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            code = child.wait(timeout=240)  # a sweep hung by its trials fails here
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    text = output.read_text(errors="replace")
    assert code is not None, f"the sweep hung:\n{text[-3000:]}"
    assert code == 0 and f"{RETURNED} {len(CASES)} trials" in text, text[-3000:]  # returned, not exited early
    assert group_left(child.pid) == []  # no worker, fork server or Prefect server outlives the script

    store = SqlTrialStore(sqlite_url)
    try:
        sid = store.sweep_id("hostile")
        trials = {r.config["case"]: r for r in store.trials(sid)}
        flow_run_id = str(store.sweep(sid)["flow_run_id"])
    finally:
        store.close()
    assert sorted(trials) == sorted(CASES)
    states = {case: r.state for case, r in trials.items()}
    assert states == {case: TrialState.FAIL if case in REASONS else TrialState.COMPLETE for case in CASES}
    for case, needle in REASONS.items():
        assert needle in (trials[case].error or ""), (case, trials[case].error)
    task_states = _task_run_states(flow_run_id, expected=len(CASES))
    for case, record in trials.items():
        state = task_states[str(record.task_run_id)]
        assert state.is_failed() if case in REASONS else state.is_completed(), (case, state)
        if case in REASONS:
            assert REASONS[case] in (state.message or ""), (case, state.message)
