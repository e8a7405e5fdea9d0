"""What a trial needs (GPUs, CPU cores, custom resources), what this machine has, and which of it a trial holds.

Plain data and one small ledger, no Prefect and no framework: the loop asks the ledger to place a trial before it
starts it (so no device is ever over-packed), hands the placement to the trial, and releases it when the trial
ends, however it ended. The worker that runs the trial applies the placement (`apply_placement`) before the
training function runs: `CUDA_VISIBLE_DEVICES` of its devices, and its CPU share as the thread count of the BLAS
and OpenMP libraries, so four trials on eight cores do not start eight threads each.

GPUs are found without importing a framework in the parent (which would initialise CUDA in a process that later
forks): the `CUDA_VISIBLE_DEVICES` the sweep was started with, else NVML (`nvidia-ml-py`, where installed), else
`nvidia-smi -L`.
"""

from __future__ import annotations

import difflib
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect_hpo.errors import PrefectHPOError

#: What each trial needs ({"gpu": 1, "cpu": 2}), or a function of its configuration that says it.
ResourcesOption = Mapping[str, float] | Callable[[Mapping[str, Any]], Mapping[str, float]]
#: The environment variables that set the thread count of the BLAS and OpenMP libraries a trial loads.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
#: Shares of one GPU smaller than this are refused: a device split further is a queue, not a share.
SMALLEST_GPU_SHARE = 1 / 16
_EPSILON = 1e-9


@dataclass(frozen=True)
class ResourceRequest:
    """What one trial asks for: `gpu` (a share 0 < g <= 1 of one device, or a whole number of devices), `cpu`
    (cores; None: an even share of the machine's), and custom resources by name."""

    gpu: float = 0.0
    cpu: float | None = None
    custom: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """The request as the user writes it (what `trial.resources` shows, without the defaults)."""
        out = {"gpu": self.gpu} if self.gpu else {}
        if self.cpu is not None:
            out["cpu"] = self.cpu
        return {**out, **self.custom}


def parse_request(value: object, where: str = "resources") -> ResourceRequest:
    """A request from the user's mapping, or an error naming the resource, what was asked and the fix."""
    if value is None:
        return ResourceRequest()
    if not isinstance(value, Mapping):
        raise PrefectHPOError(
            f"{where} must be a mapping such as {{'gpu': 1, 'cpu': 2}} (or a function of the configuration that "
            f"returns one), got {value!r}"
        )
    amounts: dict[str, float] = {}
    for name, amount in value.items():
        if not isinstance(name, str) or not name:
            raise PrefectHPOError(f"{where}: resource names are strings such as 'gpu' or 'cpu', got {name!r}")
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount):
            raise PrefectHPOError(f"{where}[{name!r}] must be a number, got {amount!r}")
        if amount < 0:
            raise PrefectHPOError(f"{where}[{name!r}] must be 0 or more, got {amount!r}")
        amounts[name] = float(amount)
    gpu = amounts.pop("gpu", 0.0)
    _check_gpu_share(gpu, where)
    cpu = amounts.pop("cpu", None)
    if cpu is not None and cpu <= 0:
        raise PrefectHPOError(f"{where}['cpu'] must be more than 0 cores, got {cpu:g}; leave it out for an even share")
    return ResourceRequest(gpu=gpu, cpu=cpu, custom=amounts)


def _check_gpu_share(gpu: float, where: str) -> None:
    """A GPU request shares one device evenly (1/2, 1/4, ...) or takes whole devices."""
    if gpu > 1 and abs(gpu - round(gpu)) > _EPSILON:
        raise PrefectHPOError(
            f"{where}['gpu']={gpu:g}: more than one GPU is asked for in whole devices; use {math.ceil(gpu)} "
            f"(or a share of one device such as 0.5)"
        )
    if 0 < gpu < 1:
        per_device = 1 / gpu
        if gpu < SMALLEST_GPU_SHARE - _EPSILON or abs(per_device - round(per_device)) > 1e-6:
            near = 1 / max(1, min(16, round(per_device)))
            raise PrefectHPOError(
                f"{where}['gpu']={gpu:g} does not divide a device evenly; use a share that does, such as "
                f"{near:g} ({round(1 / near)} trials per device)"
            )


@dataclass(frozen=True)
class Inventory:
    """What this machine lends trials: GPU device ids (as CUDA names them), CPU cores, custom capacities."""

    devices: tuple[str, ...] = ()
    cpus: float = 1.0
    custom: Mapping[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        gpus = f"GPUs {', '.join(self.devices)}" if self.devices else "no GPU"
        others = "".join(f", {name}={amount:g}" for name, amount in self.custom.items())
        return f"{gpus}, {self.cpus:g} CPU cores{others}"


def machine_cpus() -> int:
    """The cores this process may run on (its affinity mask, as a container or `taskset` sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on macOS or Windows
        return os.cpu_count() or 1


def discover_devices() -> tuple[str, ...]:
    """The GPUs this machine has, without importing a framework: the `CUDA_VISIBLE_DEVICES` the sweep was started
    with, else NVML's device count, else `nvidia-smi -L`; none where none of them answers."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        names = [name.strip() for name in visible.split(",") if name.strip()]
        # CUDA stops at the first invalid entry ("-1" is the usual way to hide every device)
        valid: list[str] = []
        for name in names:
            if name.startswith("-"):
                break
            valid.append(name)
        return tuple(valid)
    count = _nvml_count()
    if count is None:
        count = _nvidia_smi_count()
    return tuple(str(index) for index in range(count or 0))


def _nvml_count() -> int | None:
    try:
        import pynvml  # type: ignore[import-not-found]  # nvidia-ml-py, an optional dependency
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver: NVML raises its own errors; no GPU is then the answer
        return None


def _nvidia_smi_count() -> int | None:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        listing = subprocess.run([binary, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if listing.returncode != 0:
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def build_inventory(
    devices: Sequence[str | int] | str | None = "auto", capacity: Mapping[str, float] | None = None
) -> Inventory:
    """This machine's inventory for a sweep: `devices` ("auto": discovered; None: no GPU; or the ids to use),
    `capacity` (cores as "cpu", custom resources by name), checked, each error naming the field and the fix."""
    if devices == "auto":
        found = discover_devices()
    elif devices is None:
        found = ()
    elif isinstance(devices, str) or not isinstance(devices, Iterable):
        raise PrefectHPOError(
            f"devices must be 'auto' (find this machine's GPUs), None (use none) or a list of GPU ids such as "
            f"[0, 1], got {devices!r}"
        )
    else:
        found = tuple(_device_id(d) for d in devices)
        if len(set(found)) != len(found):
            raise PrefectHPOError(f"devices lists a GPU twice: {list(devices)!r}; name each device once")
    if not isinstance(capacity, Mapping | None):
        raise PrefectHPOError(f"capacity must be a mapping such as {{'cpu': 8, 'license': 2}}, got {capacity!r}")
    given = dict(capacity or {})
    if "gpu" in given:
        raise PrefectHPOError("capacity['gpu']: GPUs are given as devices=[...] (their ids), not as a count")
    for name, amount in given.items():
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not amount > 0:
            raise PrefectHPOError(f"capacity[{name!r}] must be a number above 0, got {amount!r}")
    cpus = float(given.pop("cpu", machine_cpus()))
    return Inventory(devices=found, cpus=cpus, custom={k: float(v) for k, v in given.items()})


def _device_id(device: object) -> str:
    if isinstance(device, bool) or not isinstance(device, int | str) or str(device).strip() in ("", "-1"):
        raise PrefectHPOError(f"devices: {device!r} is no GPU id; give ids such as 0, 1 or 'GPU-<uuid>'")
    if isinstance(device, int) and device < 0:
        raise PrefectHPOError(f"devices: {device!r} is no GPU id; ids count from 0")
    return str(device).strip()


def never_fits(request: ResourceRequest, inventory: Inventory) -> str | None:
    """Why `request` can never run on `inventory` (naming the resource, what was asked and what exists), or None."""
    if request.gpu > 0 and not inventory.devices:
        return (
            f"resources['gpu']={request.gpu:g} but this machine has no GPU (none found; pass devices=[...] to name "
            "them, or run the sweep on a work pool with GPU workers)"
        )
    if request.gpu > len(inventory.devices):
        return (
            f"resources['gpu']={request.gpu:g} but this machine has {len(inventory.devices)} GPU(s) "
            f"({', '.join(inventory.devices)}); ask for at most {len(inventory.devices)}"
        )
    if request.cpu is not None and request.cpu > inventory.cpus + _EPSILON:
        return (
            f"resources['cpu']={request.cpu:g} but this machine lends {inventory.cpus:g} CPU cores; ask for at most "
            f"{inventory.cpus:g} (or set capacity={{'cpu': N}})"
        )
    for name, amount in request.custom.items():
        if amount <= 0:
            continue
        if name not in inventory.custom:
            near = difflib.get_close_matches(name.lower(), ["gpu", "cpu", *inventory.custom], n=1, cutoff=0.75)
            if near:
                return f"resources[{name!r}]={amount:g}: no resource is called {name!r}; did you mean {near[0]!r}?"
            return (
                f"resources[{name!r}]={amount:g} but no capacity of {name!r} is declared; declare it with "
                f"capacity={{{name!r}: N}}, or ask only for 'gpu' and 'cpu'"
            )
        if amount > inventory.custom[name] + _EPSILON:
            return f"resources[{name!r}]={amount:g} but capacity[{name!r}] is {inventory.custom[name]:g}"
    return None


@dataclass(frozen=True)
class Placement:
    """What one trial holds: its devices (with the share of each), its CPU threads, and what it asked for."""

    devices: tuple[str, ...] = ()
    gpu_share: float = 0.0
    cpu_threads: int | None = None
    cpu: float = 0.0
    custom: Mapping[str, float] = field(default_factory=dict)
    requested: Mapping[str, float] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        """The variables a trial's own process gets before its training code runs."""
        env = {"CUDA_VISIBLE_DEVICES": ",".join(self.devices)} if self.devices else {}
        if self.cpu_threads is not None:
            env.update(dict.fromkeys(THREAD_VARIABLES, str(self.cpu_threads)))
        return env


class ResourceLedger:
    """Which trial holds which part of the inventory; places a trial only where its request fits.

    Shares of one device are packed onto the busiest device that still has room (best fit), so whole devices
    stay free for trials that need whole devices; a whole-device request takes devices no one else holds.
    """

    def __init__(self, inventory: Inventory, slots: int) -> None:
        self.inventory = inventory
        self._slots = max(1, slots)
        self._used_gpu = dict.fromkeys(inventory.devices, 0.0)
        self._used_cpu = 0.0
        self._used_custom = dict.fromkeys(inventory.custom, 0.0)
        self._held: dict[int, Placement] = {}

    @property
    def default_threads(self) -> int:
        """A trial's thread count where it names no cores: an even share of the cores among the slots."""
        return max(1, int(self.inventory.cpus // self._slots))

    def place(self, key: int, request: ResourceRequest) -> Placement | None:
        """Hold what `request` asks for under `key` (a trial number), or None while it does not fit now."""
        if key in self._held:
            return self._held[key]
        devices = self._devices_for(request.gpu)
        if devices is None:
            return None
        cpu = request.cpu or 0.0
        if request.cpu is not None and self._used_cpu + cpu > self.inventory.cpus + _EPSILON:
            return None
        for name, amount in request.custom.items():
            if self._used_custom.get(name, 0.0) + amount > self.inventory.custom.get(name, 0.0) + _EPSILON:
                return None
        share = request.gpu if request.gpu < 1 else 1.0
        for device in devices:
            self._used_gpu[device] += share
        self._used_cpu += cpu
        for name, amount in request.custom.items():
            self._used_custom[name] = self._used_custom.get(name, 0.0) + amount
        threads = max(1, int(request.cpu)) if request.cpu is not None else self.default_threads
        placement = Placement(
            devices=devices,
            gpu_share=share if devices else 0.0,
            cpu_threads=threads,
            cpu=cpu,
            custom=dict(request.custom),
            requested=request.as_dict(),
        )
        self._held[key] = placement
        return placement

    def _devices_for(self, gpu: float) -> tuple[str, ...] | None:
        if gpu <= 0:
            return ()
        if gpu < 1:
            fitting = [d for d, used in self._used_gpu.items() if used + gpu <= 1 + _EPSILON]
            if not fitting:
                return None
            # best fit: the busiest device with room (ties: the first listed)
            return (max(fitting, key=lambda d: (self._used_gpu[d], -self.inventory.devices.index(d))),)
        free = [d for d, used in self._used_gpu.items() if used <= _EPSILON]
        wanted = round(gpu)
        return tuple(free[:wanted]) if len(free) >= wanted else None

    def release(self, key: int) -> None:
        """Give back what `key` holds (a trial that ended, however it ended); nothing when it holds nothing."""
        placement = self._held.pop(key, None)
        if placement is None:
            return
        for device in placement.devices:
            self._used_gpu[device] = max(0.0, self._used_gpu[device] - placement.gpu_share)
        self._used_cpu = max(0.0, self._used_cpu - placement.cpu)
        for name, amount in placement.custom.items():
            self._used_custom[name] = max(0.0, self._used_custom[name] - amount)

    def holding(self, key: int) -> Placement | None:
        """What `key` holds now, if anything."""
        return self._held.get(key)

    def busy_devices(self) -> dict[str, float]:
        """Each device and the share of it trials hold now (0.0: idle)."""
        return dict(self._used_gpu)


#: The thread count this process was last given (a worker process runs many trials): its own, never shared.
_APPLIED: dict[str, int] = {}


def apply_placement(devices: Sequence[str], cpu_threads: int | None) -> None:
    """Pin this process (a trial's own worker) to its placement, before the training code runs.

    The environment covers what the training code loads from now on (CUDA reads CUDA_VISIBLE_DEVICES when it
    initialises; OpenMP and the BLAS libraries read their variables when they load). Libraries this process
    already loaded (the fork server imported the user's script, which may import numpy or torch) are told at
    run time: threadpoolctl where installed (numpy's and scikit-learn's BLAS and OpenMP), torch's own call where
    torch is loaded.
    """
    os.environ.update(Placement(tuple(devices)).environment())
    if cpu_threads is None or _APPLIED.get("threads") == cpu_threads:
        return  # a worker that runs trial after trial with one share is set once (threadpoolctl costs ~ms)
    _APPLIED["threads"] = cpu_threads
    os.environ.update(Placement(cpu_threads=cpu_threads).environment())
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        threadpool_limits(cpu_threads)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(cpu_threads)


__all__ = [
    "Inventory",
    "Placement",
    "ResourceLedger",
    "ResourceRequest",
    "ResourcesOption",
    "apply_placement",
    "build_inventory",
    "discover_devices",
    "machine_cpus",
    "never_fits",
    "parse_request",
]
