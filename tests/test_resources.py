"""The resource model on its own: requests as users write them, this machine's inventory, and the ledger that
places trials on it without over-packing a device."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.resources import (
    Inventory,
    Placement,
    ResourceLedger,
    ResourceRequest,
    build_inventory,
    discover_devices,
    never_fits,
    parse_request,
)


class TestRequests:
    def test_gpu_cpu_and_custom_amounts_are_read(self) -> None:
        request = parse_request({"gpu": 0.25, "cpu": 2, "license": 1})
        assert request == ResourceRequest(gpu=0.25, cpu=2.0, custom={"license": 1.0})
        assert request.as_dict() == {"gpu": 0.25, "cpu": 2.0, "license": 1.0}
        assert parse_request(None) == ResourceRequest() and parse_request({"gpu": 2}).gpu == 2.0

    @pytest.mark.parametrize(
        ("given", "named"),
        [
            ({"gpu": 0.3}, "resources['gpu']=0.3 does not divide a device evenly; use a share that does, such as 0.3"),
            ({"gpu": 1.5}, "resources['gpu']=1.5: more than one GPU is asked for in whole devices; use 2"),
            ({"gpu": -1}, "resources['gpu'] must be 0 or more, got -1"),
            ({"gpu": "one"}, "resources['gpu'] must be a number, got 'one'"),
            ({"gpu": True}, "resources['gpu'] must be a number, got True"),
            ({"cpu": 0}, "resources['cpu'] must be more than 0 cores"),
            ({"gpu": 0.01}, "does not divide a device evenly"),
            (["gpu"], "resources must be a mapping such as {'gpu': 1, 'cpu': 2}"),
        ],
    )
    def test_a_bad_request_names_the_resource_and_the_fix(self, given: object, named: str) -> None:
        with pytest.raises(PrefectHPOError, match=named.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
            parse_request(given)


class TestInventory:
    def test_devices_given_and_capacity(self) -> None:
        inventory = build_inventory([0, "1"], {"cpu": 8, "license": 2})
        assert inventory == Inventory(devices=("0", "1"), cpus=8.0, custom={"license": 2.0})
        assert build_inventory(None, None).devices == ()
        assert build_inventory(None, None).cpus == len(os.sched_getaffinity(0))

    @pytest.mark.parametrize(
        ("devices", "capacity", "named"),
        [
            ([0, 0], None, "devices lists a GPU twice"),
            ("0,1", None, "devices must be 'auto' \\(find this machine's GPUs\\), None"),
            ([-1], None, "devices: -1 is no GPU id"),
            (None, {"gpu": 2}, "GPUs are given as devices=\\[...\\]"),
            (None, {"cpu": 0}, "capacity\\['cpu'\\] must be a number above 0"),
        ],
    )
    def test_bad_devices_or_capacity_are_refused(self, devices: object, capacity: object, named: str) -> None:
        with pytest.raises(PrefectHPOError, match=named):
            build_inventory(devices, capacity)  # type: ignore[arg-type]

    def test_cuda_visible_devices_is_what_the_sweep_may_use(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
        assert discover_devices() == ("2", "3")
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
        assert discover_devices() == ()
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
        assert discover_devices() == ()

    def test_nvidia_smi_is_asked_without_a_framework(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A real `nvidia-smi` on PATH (a script printing what the real one prints for two GPUs)."""
        smi = tmp_path / "nvidia-smi"
        smi.write_text(
            "#!/bin/sh\n"
            'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)"\n'
            'echo "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb)"\n'
        )
        smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
        assert discover_devices() == ("0", "1")
        smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate' >&2\nexit 9\n")
        assert discover_devices() == ()


class TestLedger:
    def test_shares_pack_onto_the_busiest_device_and_whole_requests_take_free_ones(self) -> None:
        ledger = ResourceLedger(Inventory(devices=("0", "1", "2"), cpus=8), slots=8)
        quarter = ResourceRequest(gpu=0.25)
        first = ledger.place(0, quarter)
        assert first is not None and first.devices == ("0",) and first.gpu_share == 0.25
        assert [ledger.place(n, quarter).devices for n in (1, 2, 3)] == [("0",)] * 3  # type: ignore[union-attr]
        assert ledger.place(4, ResourceRequest(gpu=0.5)).devices == ("1",)  # type: ignore[union-attr]
        two = ledger.place(5, ResourceRequest(gpu=2))
        assert two is None  # only device 2 is free: a 2-GPU trial never shares
        whole = ledger.place(6, ResourceRequest(gpu=1))
        assert whole is not None and whole.devices == ("2",)
        assert ledger.place(7, ResourceRequest(gpu=0.5)).devices == ("1",)  # type: ignore[union-attr]
        assert ledger.place(8, quarter) is None  # every device is full
        assert ledger.busy_devices() == {"0": 1.0, "1": 1.0, "2": 1.0}
        ledger.release(6)
        ledger.release(4)
        assert ledger.place(5, ResourceRequest(gpu=2)) is None  # device 1 still holds half a trial
        ledger.release(7)
        pair = ledger.place(5, ResourceRequest(gpu=2))
        assert pair is not None and pair.devices == ("1", "2") and pair.gpu_share == 1.0
        ledger.release(99)  # holds nothing: nothing happens
        assert ledger.busy_devices() == {"0": 1.0, "1": 1.0, "2": 1.0}

    def test_cores_and_custom_resources_are_counted(self) -> None:
        ledger = ResourceLedger(Inventory(devices=(), cpus=4, custom={"license": 1}), slots=4)
        assert ledger.default_threads == 1
        two = ledger.place(0, ResourceRequest(cpu=3))
        assert two is not None and two.cpu_threads == 3
        assert ledger.place(1, ResourceRequest(cpu=2)) is None
        assert ledger.place(2, ResourceRequest(custom={"license": 1})) is not None
        assert ledger.place(3, ResourceRequest(custom={"license": 1})) is None
        ledger.release(0)
        ledger.release(2)
        assert ledger.place(1, ResourceRequest(cpu=2)) is not None
        assert ledger.place(3, ResourceRequest(custom={"license": 1})) is not None

    def test_a_trial_without_cores_asked_gets_an_even_share_as_its_threads(self) -> None:
        placement = ResourceLedger(Inventory(devices=("0",), cpus=8), slots=4).place(0, ResourceRequest(gpu=1))
        assert placement == Placement(devices=("0",), gpu_share=1.0, cpu_threads=2, requested={"gpu": 1.0})
        assert placement.environment() == {
            "CUDA_VISIBLE_DEVICES": "0",
            "OMP_NUM_THREADS": "2",
            "MKL_NUM_THREADS": "2",
            "OPENBLAS_NUM_THREADS": "2",
            "VECLIB_MAXIMUM_THREADS": "2",
        }

    @pytest.mark.parametrize(
        ("request_", "named"),
        [
            (ResourceRequest(gpu=1), "resources\\['gpu'\\]=1 but this machine has no GPU"),
            (ResourceRequest(gpu=3), r"=3 but this machine has 2 GPU\(s\) \(0, 1\); ask for at most 2"),
            (ResourceRequest(cpu=64), "resources\\['cpu'\\]=64 but this machine lends 4 CPU cores"),
            (ResourceRequest(custom={"tpu": 1}), "no capacity of 'tpu' is declared; declare it with capacity="),
        ],
    )
    def test_what_can_never_fit_is_named(self, request_: ResourceRequest, named: str) -> None:
        devices = () if request_.gpu == 1 else ("0", "1")
        why = never_fits(request_, Inventory(devices=devices, cpus=4))
        assert why is not None
        assert __import__("re").search(named, why), why
        assert never_fits(ResourceRequest(gpu=0.5, cpu=4), Inventory(devices=("0",), cpus=4)) is None

    def test_a_misspelt_resource_is_named_with_the_one_meant(self) -> None:
        inventory = Inventory(devices=("0",), cpus=4, custom={"license": 1})
        for typo, meant in (("gpus", "gpu"), ("GPU", "gpu"), ("cpus", "cpu"), ("licence", "license")):
            why = never_fits(ResourceRequest(custom={typo: 1}), inventory)
            assert why == f"resources[{typo!r}]=1: no resource is called {typo!r}; did you mean {meant!r}?"


def test_a_placement_sets_the_devices_and_threads_in_a_process_that_has_numpy_loaded() -> None:
    """In a real process that loaded numpy (and so its BLAS, with a thread per core) before the trial: its BLAS
    is limited at run time, to one thread (this machine has two cores or more)."""
    code = (
        "import json, os, numpy\n"
        "from threadpoolctl import threadpool_info\n"
        "from prefect_hpo.resources import apply_placement\n"
        "apply_placement(('3',), 1)\n"
        "blas = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']\n"
        "print(json.dumps({'cuda': os.environ['CUDA_VISIBLE_DEVICES'], 'omp': os.environ['OMP_NUM_THREADS'],"
        " 'blas': blas}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    seen = json.loads(out.stdout)
    assert seen["cuda"] == "3" and seen["omp"] == "1"
    assert seen["blas"] and set(seen["blas"]) == {1}
