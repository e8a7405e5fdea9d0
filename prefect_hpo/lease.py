"""One parent per sweep: the running parent holds the sweep in the store and keeps its claim alive.

A second parent started on the same sweep is refused (SweepBusyError) while the
first is alive: its heartbeat is fresh and, on this host, its process exists. A
parent that died (a crash, kill -9) is taken over at once on its own host, and
after `stale_after` seconds of silence from another host. We chose refusing over
joining as a second driver: two loops asking one strategy for configurations
would each need the other's pending trials, which the store does not carry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid

from prefect_hpo.errors import StoreError
from prefect_hpo.store.sql import SqlTrialStore

logger = logging.getLogger("prefect_hpo.lease")

HEARTBEAT_S = 5.0
STALE_AFTER_S = 30.0


def new_owner() -> str:
    """This parent's name in the store: host, process id and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


#: The owners whose leases this process holds now. Process-wide on purpose: it is this process's own
#: knowledge of which of its claims are live, which a claim left behind by an earlier sweep of this same
#: process (its release failed on a full or unreachable store) needs in order to be taken over.
_HELD_HERE: set[str] = set()


def owner_alive(owner: str) -> bool:
    """False when `owner` ran on this host and its process is gone (or is this process and its lease ended);
    True otherwise (we cannot see further)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    if int(pid) == os.getpid():
        return owner in _HELD_HERE
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SweepLease:
    """Holds a sweep for this parent while the `with` block runs; a daemon thread renews the claim."""

    def __init__(
        self, store: SqlTrialStore, sweep_id: int, interval: float = HEARTBEAT_S, stale_after: float = STALE_AFTER_S
    ) -> None:
        self._store, self._sweep_id = store, sweep_id
        self._interval, self._stale_after = interval, stale_after
        self.owner = new_owner()
        self.previous_owner: str | None = None
        self.previous_flow_run_id: str | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="hpo-sweep-lease")

    def __enter__(self) -> SweepLease:
        self.previous_owner, self.previous_flow_run_id = self._store.claim_sweep(
            self._sweep_id, self.owner, self._stale_after, owner_alive
        )
        _HELD_HERE.add(self.owner)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._store.renew_claim(self._sweep_id, self.owner)
            except StoreError as exc:  # the sweep itself meets the same store and says what is wrong
                logger.warning("sweep lease not renewed: %s", exc)

    def __exit__(self, *_: object) -> None:
        self._stopped.set()
        _HELD_HERE.discard(self.owner)
        self._thread.join(timeout=self._interval + 5)
        # If the store cannot take the release (full, unreachable), the claim stays with a dead owner,
        # which the next parent on this host takes over at once (and one elsewhere after stale_after).
        with contextlib.suppress(StoreError):
            self._store.release_sweep(self._sweep_id, self.owner)
