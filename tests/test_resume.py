"""Resume after a crash, and one parent per sweep: real processes killed with SIGKILL, real stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client

from prefect_hpo import Budget, Categorical, Float, SqlTrialStore, TrialState, start_sweep, sweep
from prefect_hpo.errors import SweepBusyError
from prefect_hpo.lease import new_owner, owner_alive
from tests.resume_train import slow

ROOT = Path(__file__).resolve().parents[1]


def test_a_second_parent_is_refused_while_the_first_runs(sqlite_url: str, tmp_path: Path) -> None:
    space = {"x": Float(0.0, 1.0), "log": str(tmp_path / "log.txt")}
    first = start_sweep(slow, space, "loss", "random", Budget(max_trials=50), sqlite_url, "busy", workers="threads")
    try:
        deadline = time.monotonic() + 60
        while not first.active_trials():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(SweepBusyError, match=r"sweep 'busy' is being run by .*wait for it to end or stop it"):
            sweep(slow, space, "loss", "random", Budget(max_trials=50), sqlite_url, "busy", workers="threads")
        assert time.monotonic() - started < 30  # fails fast: no trial of its own ran
    finally:
        first.stop(timeout=60)
    stopped = first.result()
    assert all(r.attempt == 1 for r in stopped.records)  # the refused parent touched nothing
    # once the first has ended, the same sweep runs again (and continues)
    again = sweep(
        slow,
        space,
        "loss",
        "random",
        Budget(max_trials=len(stopped.records) + 1),
        sqlite_url,
        "busy",
        workers="threads",
    )
    assert len(again.records) == len(stopped.records) + 1


@pytest.mark.parametrize("storage", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_claims_of_a_live_dead_or_silent_owner(storage: str, sqlite_url: str, request: pytest.FixtureRequest) -> None:
    url = sqlite_url if storage == "sqlite" else str(request.getfixturevalue("pg_url"))
    store = SqlTrialStore(url)
    sid = store.open_sweep("claimed", space={}, objectives=[], strategy="-", budget={})
    elsewhere = "another-host:123:abcd"
    assert store.claim_sweep(sid, elsewhere, 30.0, owner_alive) == (None, None)
    with pytest.raises(SweepBusyError, match="another-host:123:abcd"):
        store.claim_sweep(sid, new_owner(), 30.0, owner_alive)  # alive, as far as this host can tell
    mine = new_owner()
    assert store.claim_sweep(sid, mine, 0.0, owner_alive) == (elsewhere, None)  # silent longer than stale_after
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    local_dead = mine.split(":")[0] + f":{dead.stdout.strip()}:dead"
    store.release_sweep(sid, mine)
    store.claim_sweep(sid, local_dead, 30.0, owner_alive)
    assert not owner_alive(local_dead)
    assert store.claim_sweep(sid, mine, 30.0, owner_alive)[0] == local_dead  # dead on this host: taken at once
    assert store.renew_claim(sid, mine) and not store.renew_claim(sid, elsewhere)
    store.close()


CHILD = textwrap.dedent(
    """
    import sys
    from prefect_hpo import Budget, Categorical, sweep
    from tests.resume_train import slow
    sweep(slow, {"x": Categorical([i / 10 for i in range(8)]), "log": sys.argv[2]}, "loss", "grid",
          Budget(max_trials=8, max_concurrent=2), storage=sys.argv[1], name="crashing", workers="threads")
    """
)


def test_a_killed_parent_is_resumed_without_losing_or_repeating_work(sqlite_url: str, tmp_path: Path) -> None:
    log = tmp_path / "finished.log"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, sqlite_url, str(log)],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "child.err", "wb"),  # noqa: SIM115 - the child owns it
    )
    store = SqlTrialStore(sqlite_url)
    deadline = time.monotonic() + 120
    try:
        while True:  # kill it with trials finished and trials running
            assert child.poll() is None, (tmp_path / "child.err").read_text()[-3000:]
            assert time.monotonic() < deadline, "the child sweep did not get going"
            if "crashing" in store.sweep_names():
                states = [r.state for r in store.trials(store.sweep_id("crashing"))]
                if states.count(TrialState.COMPLETE) >= 2 and TrialState.RUNNING in states:
                    break
            time.sleep(0.05)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the parent and everything it started
        child.wait(timeout=30)
    sid = store.sweep_id("crashing")
    before = {r.number: r for r in store.trials(sid)}
    crashed_run = store.sweep(sid)["flow_run_id"]
    orphans = [n for n, r in before.items() if r.state == TrialState.RUNNING]
    assert orphans

    result = sweep(
        slow,
        {"x": Categorical([i / 10 for i in range(8)]), "log": str(log)},
        "loss",
        "grid",
        Budget(max_trials=8, max_concurrent=2),
        storage=sqlite_url,
        name="crashing",
        workers="threads",
    )
    records = {r.number: r for r in result.records}
    assert len(records) == 8 and all(r.state == TrialState.COMPLETE for r in records.values())
    assert len({r.config_hash for r in records.values()}) == 8  # no configuration evaluated twice
    for number, earlier in before.items():
        if earlier.state == TrialState.COMPLETE:  # finished work stays as it was
            assert records[number].value == earlier.value and records[number].attempt == 1
    assert all(records[n].attempt == 2 for n in orphans)  # re-run as new attempts of the same trials
    finished = sorted(float(line) for line in log.read_text().split())
    assert finished == sorted(r.value for r in records.values())  # each trial finished once  # type: ignore[misc]
    assert result.best_config is not None and result.best_config["x"] == 0.0  # as an uninterrupted grid sweep
    with get_client(sync_client=True) as client:
        old = client.read_flow_run(UUID(crashed_run))
    assert old.state is not None and old.state.is_crashed()  # the dead parent's flow run no longer shows Running
    store.close()
