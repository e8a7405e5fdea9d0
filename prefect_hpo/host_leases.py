"""A trial's devices on the host it landed on (a work pool's worker machine), leased through lock files.

On a work pool the parent cannot place trials: it does not know which host will take a flow run. Each trial flow
run claims its GPUs on its own host, before it imports the training code. Every device has `SLOTS` lock files,
one per 1/16 of it; a trial holding a share of a device holds that many of its slots, a trial holding whole
devices holds every slot of each. Locks are `fcntl.flock` locks held by the trial's process: the kernel drops
them when the process ends, however it ends (a crash, SIGKILL, a lost worker), so no lease outlives its trial
and none needs cleaning up. Several workers on one host share the folder (default: one per user in the system's
temporary folder; `PREFECT_HPO_DEVICE_LOCKS` names another), so they never hand out one device twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.resources import Inventory, Placement, ResourceRequest, never_fits

#: Lock files per device: a share of a device holds `share * SLOTS` of them (shares are 1/16 or more).
SLOTS = 16
#: The environment variable that names the lock folder of this host's workers.
LOCKS_VARIABLE = "PREFECT_HPO_DEVICE_LOCKS"


class DoesNotFitHost(PrefectHPOError):
    """A trial asked for more than its host has: it cannot run there, whatever the wait."""


def lock_folder() -> Path:
    """The folder of this host's device locks (shared by every worker on the host)."""
    given = os.environ.get(LOCKS_VARIABLE)
    folder = Path(given) if given else Path(tempfile.gettempdir()) / f"prefect_hpo-devices-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class HostLease:
    """The slots one trial holds on this host; `release()` (or the process's end) gives them back."""

    def __init__(self, placement: Placement, files: list[IO[bytes]]) -> None:
        self.placement = placement
        self._files = files

    def release(self) -> None:
        for file in self._files:
            with contextlib.suppress(OSError):
                fcntl.flock(file, fcntl.LOCK_UN)
                file.close()
        self._files = []


def claim_devices(
    request: ResourceRequest,
    inventory: Inventory,
    *,
    folder: Path | None = None,
    poll: float = 0.5,
    waiting: Callable[[], None] | None = None,
) -> HostLease:
    """Hold what `request` asks of this host's devices, waiting (every `poll` s) while other trials hold them.

    A request the host can never meet raises `DoesNotFitHost`, naming the host, what it has and what was asked.
    `waiting` is called at each poll while the trial waits (the caller's heartbeat goes on meanwhile)."""
    why = never_fits(ResourceRequest(gpu=request.gpu), inventory)  # cores and custom resources: not leased here
    if why is not None:
        raise DoesNotFitHost(
            f"host {socket.gethostname()} ({inventory.describe()}) cannot run this trial: {why.split(' (')[0]}; "
            "send it to a queue whose workers have enough GPUs (a worker sees the GPUs of its "
            "CUDA_VISIBLE_DEVICES, else all its host's)"
        )
    folder = folder or lock_folder()
    while True:
        lease = _try_claim(request, inventory, folder)
        if lease is not None:
            return lease
        if waiting is not None:
            waiting()
        time.sleep(poll)


def _try_claim(request: ResourceRequest, inventory: Inventory, folder: Path) -> HostLease | None:
    threads = max(1, int(request.cpu)) if request.cpu is not None else None
    if request.gpu <= 0:
        return HostLease(Placement(cpu_threads=threads, requested=request.as_dict()), [])
    if request.gpu < 1:
        wanted = round(request.gpu * SLOTS)
        for device in inventory.devices:
            files = _take_slots(folder, device, wanted)
            if files is not None:
                placement = Placement((device,), request.gpu, threads, requested=request.as_dict())
                return HostLease(placement, files)
        return None
    held: list[IO[bytes]] = []
    devices: list[str] = []
    for device in inventory.devices:
        files = _take_slots(folder, device, SLOTS)
        if files is None:
            continue
        held += files
        devices.append(device)
        if len(devices) == round(request.gpu):
            return HostLease(Placement(tuple(devices), 1.0, threads, requested=request.as_dict()), held)
    HostLease(Placement(), held).release()
    return None


def _take_slots(folder: Path, device: str, wanted: int) -> list[IO[bytes]] | None:
    """`wanted` free slots of `device`, locked; None (nothing kept) where fewer are free."""
    taken: list[IO[bytes]] = []
    for slot in range(SLOTS):
        file = open(folder / f"gpu-{_safe(device)}.slot-{slot:02d}", "ab")  # noqa: SIM115 - held as the lock
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            continue
        taken.append(file)
        if len(taken) == wanted:
            return taken
    HostLease(Placement(), taken).release()
    return None


def _safe(device: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in device)


@contextlib.contextmanager
def holding(lease: HostLease) -> Iterator[Placement]:
    try:
        yield lease.placement
    finally:
        lease.release()


__all__ = ["LOCKS_VARIABLE", "SLOTS", "DoesNotFitHost", "HostLease", "claim_devices", "holding", "lock_folder"]
