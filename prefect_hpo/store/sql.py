"""The trial store on SQLAlchemy: SQLite by default, any SQLAlchemy URL (PostgreSQL for shared sweeps).

`SqlTrialStore` is the one object callers hold. Its calls come from small parts, one per group of
tables and questions, all over the one `Database` the store opened:

| part | module | calls |
| --- | --- | --- |
| `Sweeps` | `store.sweeps` | open_sweep, fork_name, sweep_id, sweep, sweep_names, start_sweep, finish_sweep |
| `Leases` | `store.leases` | claim_sweep, renew_claim, release_sweep |
| `Trials` | `store.trials` | next_number, create_trial, set_task_run, finish_trial, end_attempt, resume_trial, |
|          |                | leave_paused, give_up, request_stop, stop_request, trial, trials, find_config |
| `Reports` | `store.reports` | add_report, reports, running_averages |
| `Rungs` | `store.rungs` | record_rung, rungs, rung_scores, paused_at_rungs |
| `Heartbeats` | `store.heartbeats` | beat, heartbeat, pulses |
| `BudgetUsage` | `store.usage` | usage, total_steps |
| `Dispatch` | `store.dispatch` | offer, waiting, claim, claimant, release, withdraw, withdraw_all, offers |

A part is usable on its own over a `Database` (a test, a tool that needs one group of calls); the store
is their union, so that one object, opened once, answers every call without a hop per call.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from prefect_hpo.store.database import Database
from prefect_hpo.store.dispatch import Dispatch
from prefect_hpo.store.heartbeats import Heartbeats
from prefect_hpo.store.leases import Leases
from prefect_hpo.store.outages import OUTAGE_TIMEOUT_S, guard_public_methods
from prefect_hpo.store.reports import Reports
from prefect_hpo.store.rungs import Rungs
from prefect_hpo.store.sweeps import Sweeps
from prefect_hpo.store.trials import Trials
from prefect_hpo.store.usage import BudgetUsage


@guard_public_methods
class SqlTrialStore(Sweeps, Leases, Trials, Reports, Rungs, Heartbeats, BudgetUsage, Dispatch):
    """The single source of truth for sweeps, trials and reports.

    The contract, as every caller may rely on it:

    - Every write is its own short transaction, committed before the call returns, so whatever the
      parent or a trial process has been told is already durable.
    - State changes are checked: a move that `records.ALLOWED_TRANSITIONS` does not list is refused
      with a StoreError and changes nothing.
    - Several processes (the sweep's parent, its trial processes, remote workers) open the same store
      and write at once; one store object may be used from several threads (each call takes its own
      connection from the engine's pool).
    - The parent creates trials and steers them (stop requests, promotions, retries); a trial's process
      writes its reports and may record its own end. Both may record one attempt's end: the first wins
      (`end_attempt`).
    - Every write goes into the database the store opened and no other: a file deleted or replaced under
      it stops the write (`store.identity`).
    - Every call waits out a database that is briefly unreachable (up to `outage_timeout` seconds) and
      ends with a StoreError on a full disk (`store.outages`).
    """

    def __init__(self, url: str, *, outage_timeout: float = OUTAGE_TIMEOUT_S, create: bool = True) -> None:
        """Open the store at `url`, migrating its tables to this prefect_hpo's schema.

        `create`: make a SQLite file that does not exist (a new store). A trial process passes False: the
        sweep created its store, and a missing file means it was deleted or moved (`store.identity`).
        """
        super().__init__(Database(url, outage_timeout=outage_timeout, create=create))

    @property
    def url(self) -> str:
        """The storage URL as given (with its password: for processes that open the same store)."""
        return self.database.url

    @property
    def safe_url(self) -> str:
        """The storage URL with its password masked: for messages and logs."""
        return self.database.safe_url

    @property
    def outage_timeout(self) -> float:
        """How long a call waits for an unreachable database before it gives up (seconds)."""
        return self.database.outage_timeout

    def check_writable(self) -> None:
        """Write to the store once, changing nothing: `sweep()` calls it before Prefect starts.

        Raises:
            StoreError: when this process may not write there (a read-only file, a role without the rights),
                naming the file or URL and the fix.
        """
        self.database.check_writable()

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """Leaving a `with` block closes the store (its connection pools), however the block ended."""
        self.close()
