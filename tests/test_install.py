"""What a plain `pip install prefect-hpo` gives: the extras are needed only by what names them, and the wheel
alone runs sweeps and deploys its flows from a fresh environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from prefect_hpo import Budget, Float, sweep
from prefect_hpo.errors import PrefectHPOError
from tests.servers import start_prefect_server, stop

pytestmark = pytest.mark.prefect
ROOT = Path(__file__).resolve().parents[1]


def quadratic(config: dict[str, Any]) -> float:
    return (config["x"] - 0.25) ** 2


def test_to_parquet_without_pyarrow_names_the_extra(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = sweep(
        quadratic,
        {"x": Float(0.0, 1.0)},
        "loss",
        "random",
        Budget(max_trials=2),
        sqlite_url,
        "parquet-extra",
        workers="threads",
        artifact_interval=None,
    )
    for engine in ("pyarrow", "fastparquet"):  # as on a plain install: pandas finds no Parquet engine
        monkeypatch.setitem(sys.modules, engine, None)
    with pytest.raises(PrefectHPOError, match=r"pip install 'prefect-hpo\[parquet\]'"):
        result.to_parquet(tmp_path / "t.parquet")
    assert result.to_csv(tmp_path / "t.csv").exists()  # CSV needs nothing


# what a plain install lacks and a default sweep might reach for: the examples' scikit-learn (Optuna's fANOVA
# importances), the parquet and gp extras. (dask and ray are not blocked: Prefect loads them as collections
# wherever they are installed, as in the tests' environment; a plain install has neither.)
NOT_DEPENDENCIES = ("sklearn", "pyarrow", "fastparquet", "torch")
BLOCKER = f'''
import sys

class _NotInstalled:
    """Makes these packages import as if `pip install prefect-hpo` had not brought them."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_DEPENDENCIES!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
'''
DEFAULT_SWEEP = """
from prefect_hpo import Budget, Float, Int, sweep

def train(config, trial):
    for step in range(1, 4):
        loss = (config["x"] - 0.3) ** 2 + 1.0 / (step * config["n"])
        trial.report(step, loss=loss)
    return loss

if __name__ == "__main__":
    result = sweep(train, {"x": Float(0.0, 1.0), "n": Int(1, 8)}, budget=Budget(max_trials=6, max_concurrent=2),
                   storage="sqlite:///hpo.db", name="plain")
    print("best", result.best_value)
"""


def test_a_default_sweep_needs_no_extra_and_warns_of_nothing(tmp_path: Path) -> None:
    """A default sweep (TPE, local processes, artifacts and plots) where no extra is installed: every
    process of it (the sweep, its workers, the plot helper) sees the extras as missing."""
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    (tmp_path / "plain_sweep.py").write_text(DEFAULT_SWEEP)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(tmp_path / "blocker"), str(ROOT)]),
        PREFECT_HPO_HOME=str(tmp_path / "home"),
        PREFECT_LOGGING_LEVEL="INFO",
    )
    done = subprocess.run(
        [sys.executable, "plain_sweep.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-3000:]
    assert "best " in done.stdout
    complaints = [line for line in said.splitlines() if re.search(r"WARNING|ERROR|Traceback|No module named", line)]
    assert complaints == [], "\n".join(complaints)
    plots = sorted(p.name for p in (tmp_path / "plots").rglob("*.png"))
    assert plots == ["curves.png", "history.png", "importance.png", "parallel.png"]


# The wheel, as `pip install prefect-hpo` puts it into a project's environment. The project folder holds only
# the training code and the script: the flows the workers run must come from the installed package.
PROJECT_TRAIN = """
import os
import sys
from pathlib import Path


def train(config, trial):
    seen = Path(os.environ["WHEEL_SEEN"])  # which prefect_hpo each trial process imported
    (seen / f"{os.getpid()}.txt").write_text(sys.modules["prefect_hpo"].__file__)
    for step in range(1, 3):
        trial.report(step, loss=(config["x"] - 0.3) ** 2 + 0.1 / step)
    return (config["x"] - 0.3) ** 2
"""
PROJECT_SWEEPS = """
import json
import sys
from pathlib import Path

import prefect_hpo
from prefect.client.orchestration import get_client
from prefect_hpo import Budget, Float, WorkPoolExecutor, sweep
from prefect_hpo.deploy import setup_work_pool
from project_train import train

if __name__ == "__main__":
    store, facts = f"sqlite:///{Path.cwd() / 'hpo.db'}", {"prefect_hpo": prefect_hpo.__file__}
    if sys.argv[1] == "local":  # this machine's processes, artifacts and plots: sweep()'s defaults
        result = sweep(train, {"x": Float(0.0, 1.0)}, budget=Budget(max_trials=3, max_concurrent=2), storage=store)
        facts["states"] = [r.state.value for r in result.records]
        setup_work_pool(".", pool="wheel", queues={"cpu": None})
        with get_client(sync_client=True) as client:
            names = ("hpo-trial/hpo-trial", "hpo-run-sweep/hpo-sweep")
            facts["entrypoints"] = [client.read_deployment_by_name(name).entrypoint for name in names]
    else:  # each trial a flow run of the trial deployment, on the worker the test started
        executor = WorkPoolExecutor(pool="wheel")
        result = sweep(train, {"x": Float(0.0, 1.0)}, budget=Budget(max_trials=2, max_concurrent=2), storage=store,
                       name="on-pool", executor=executor)
        facts["states"] = [r.state.value for r in result.records]
    print(json.dumps(facts))
"""


def _build_wheel(into: Path) -> Path:
    """The wheel, built offline by this environment's setuptools from a copy of what it packages."""
    source = into / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "prefect_hpo", source / "prefect_hpo", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    built = subprocess.run([*pip, "-w", str(into / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (into / "dist").glob("prefect_hpo-*.whl")
    return wheel


def _fresh_environment(at: Path, wheel: Path) -> Path:
    """A new virtual environment with the wheel installed, and its dependencies read from this environment's
    site-packages (a .pth file, added after the install, so that pip never sees this environment's editable
    prefect_hpo; site-packages listed in a .pth file are searched, their own .pth files are not run). Returns
    its Python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(at)], check=True, timeout=120)
    python = at / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q"]
    installed = subprocess.run([*pip, str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(own) / "_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return python


def test_the_wheel_runs_a_sweep_and_sets_up_a_work_pool_from_a_fresh_environment(tmp_path: Path) -> None:
    """Built, installed into a virtual environment outside the repository, and run from a project folder that
    holds only training code: a local sweep, `setup_work_pool()`, and a sweep whose trials run on a worker from
    the deployed trial flow, against a real Prefect server; every process imports the installed prefect_hpo."""
    wheel = _build_wheel(tmp_path)
    python = _fresh_environment(tmp_path / "venv", wheel)
    site = (tmp_path / "venv").resolve()
    project, seen = tmp_path / "project", tmp_path / "seen"
    project.mkdir()
    seen.mkdir()
    (project / "project_train.py").write_text(PROJECT_TRAIN)
    (project / "sweeps.py").write_text(PROJECT_SWEEPS)
    home = tmp_path / "server"
    home.mkdir()
    with start_prefect_server(home) as api_url:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of the repository's
        env.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(tmp_path / "client"), WHEEL_SEEN=str(seen))
        env.update(PREFECT_HPO_HOME=str(tmp_path / "hpo-home"), PREFECT_LOGGING_LEVEL="WARNING")

        def run_sweeps(step: str) -> dict[str, Any]:
            done = subprocess.run(
                [str(python), "sweeps.py", step], cwd=project, env=env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
            printed = [line for line in done.stdout.splitlines() if line.startswith('{"prefect_hpo"')]
            facts: dict[str, Any] = json.loads(printed[-1])
            assert Path(facts["prefect_hpo"]).resolve().is_relative_to(site), facts
            return facts

        local = run_sweeps("local")
        assert local["states"] == ["COMPLETE"] * 3
        assert local["entrypoints"] == ["prefect_hpo.flows.trial.hpo_trial", "prefect_hpo.flows.sweep.hpo_run_sweep"]
        worker_log = tmp_path / "worker.log"
        with open(worker_log, "wb") as log:
            worker = subprocess.Popen(
                [str(python), "-m", "prefect", "worker", "start", "--pool", "wheel", "--work-queue", "cpu"],
                cwd=tmp_path,  # the deployment's pull step moves each flow run into the project folder
                env=dict(env, PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="0"),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                on_pool = run_sweeps("on-pool")
            finally:
                stop(worker)
        assert on_pool["states"] == ["COMPLETE"] * 2, worker_log.read_text()[-4000:]
    imported = {p.read_text() for p in seen.glob("*.txt")}
    assert len(list(seen.glob("*.txt"))) >= 3  # the local trials' processes and the two flow runs' at least
    assert all(Path(path).resolve().is_relative_to(site) for path in imported), imported
