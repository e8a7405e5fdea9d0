"""Device leases on a work pool's host: lock files per slot of a device, held by the trial's process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_hpo.host_leases import DoesNotFitHost, HostLease, _try_claim, claim_devices
from prefect_hpo.resources import Inventory, ResourceRequest

HOST = Inventory(devices=("0", "1"), cpus=4)


def test_shares_and_whole_devices_are_held_apart(tmp_path: Path) -> None:
    halves = [_try_claim(ResourceRequest(gpu=0.5), HOST, tmp_path) for _ in range(3)]
    assert [lease.placement.devices for lease in halves if lease] == [("0",), ("0",), ("1",)]
    assert _try_claim(ResourceRequest(gpu=1), HOST, tmp_path) is None  # half of device 1 is held
    assert _try_claim(ResourceRequest(gpu=0.5), HOST, tmp_path) is not None  # the other half is free
    for lease in halves:
        assert isinstance(lease, HostLease)
        lease.release()
    both = _try_claim(ResourceRequest(gpu=2, cpu=2), HOST, tmp_path)
    assert both is not None and both.placement.devices == ("0", "1") and both.placement.cpu_threads == 2


def test_a_claim_waits_while_the_devices_are_held_and_goes_on_when_freed(tmp_path: Path) -> None:
    first = _try_claim(ResourceRequest(gpu=2), HOST, tmp_path)
    assert first is not None
    polls: list[int] = []

    def waiting() -> None:  # the second trial's wait: its first poll frees the devices
        polls.append(1)
        first.release()

    second = claim_devices(ResourceRequest(gpu=1), HOST, folder=tmp_path, poll=0.01, waiting=waiting)
    assert second.placement.devices == ("0",) and polls == [1]


def test_a_killed_trials_devices_are_free_at_once(tmp_path: Path) -> None:
    """A real process holds both devices; SIGKILLed, its locks go with it (no cleanup, no timeout)."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from prefect_hpo.host_leases import claim_devices\n"
        "from prefect_hpo.resources import Inventory, ResourceRequest\n"
        f"folder = Path({str(tmp_path)!r})\n"
        "lease = claim_devices(ResourceRequest(gpu=2), Inventory(devices=('0', '1')), folder=folder)\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert _try_claim(ResourceRequest(gpu=0.5), HOST, tmp_path) is None
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        lease = _try_claim(ResourceRequest(gpu=2), HOST, tmp_path)
        assert lease is not None and lease.placement.devices == ("0", "1")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_more_than_the_host_has_is_refused_with_the_hosts_word(tmp_path: Path) -> None:
    with pytest.raises(DoesNotFitHost, match=r"host .* \(GPUs 0, 1, 4 CPU cores\) cannot run this trial: resources"):
        claim_devices(ResourceRequest(gpu=3), HOST, folder=tmp_path)
