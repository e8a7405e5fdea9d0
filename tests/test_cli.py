"""`prefect-hpo`: each command on a real store, the `run`/`resume` pair through real Prefect flows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from prefect_hpo import Budget, Float, load_result, sweep
from prefect_hpo.cli import main

pytestmark = pytest.mark.prefect


def write_spec(tmp_path: Path, url: str, **budget: int) -> Path:
    spec = {
        "name": "cli",
        "train": "tests.test_deployments:quadratic",
        "space": {"x": {"type": "float", "low": -1.0, "high": 1.0}},
        "strategy": "random",
        "budget": {"max_trials": 4, "max_concurrent": 2, **budget},
        "executor": {"workers": "threads"},
        "storage": url,
        "seed": 3,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_run_status_top_export_plot_and_resume(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path, sqlite_url, trials_per_run=2)
    assert main(["run", str(spec)]) == 0
    assert "sweep 'cli': 2 trials" in capsys.readouterr().out
    assert main(["resume", "cli", "--storage", sqlite_url]) == 0  # the stored spec: two trials more
    assert "sweep 'cli': 4 trials" in capsys.readouterr().out
    result = load_result("cli", sqlite_url)
    assert [r.number for r in result.records] == [0, 1, 2, 3]

    assert main(["status", "cli", "--storage", sqlite_url]) == 0
    out = capsys.readouterr().out
    assert "COMPLETE: 4" in out and "budget" in out and f"(trial {result.best_trial.number})" in out  # type: ignore[union-attr]
    assert main(["top", "cli", "-k", "2", "--storage", sqlite_url]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "COMPLETE" in line]
    assert len(lines) == 2 and lines[0].split("│")[1].strip() == str(result.best_trial.number)  # type: ignore[union-attr]

    csv, parquet = tmp_path / "t.csv", tmp_path / "t.parquet"
    assert main(["export", "cli", "--storage", sqlite_url, "-o", str(csv)]) == 0
    assert main(["export", "cli", "--storage", sqlite_url, "--format", "parquet", "-o", str(parquet)]) == 0
    assert len(pd.read_csv(csv)) == len(pd.read_parquet(parquet)) == 4
    assert main(["plot", "cli", "--storage", sqlite_url, "-o", str(tmp_path / "cli-plots")]) == 0
    assert {p.name for p in (tmp_path / "cli-plots").iterdir()} == {"history.png", "importance.png", "parallel.png"}


def test_errors_name_the_problem(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "nope", "--storage", sqlite_url]) == 2
    assert "no sweep named 'nope'" in capsys.readouterr().out
    sweep(lambda c: c["x"], {"x": Float(0.0, 1.0)}, budget=Budget(max_trials=1), storage=sqlite_url, name="from-python")
    assert main(["resume", "from-python", "--storage", sqlite_url]) == 2
    assert "was not started from a spec" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain: m:f\nspace: {}\nbudget: {max_concurrent: 0}\n")
    assert main(["run", str(bad)]) == 2
    assert "budget.max_concurrent" in capsys.readouterr().out


def test_the_installed_command(sqlite_url: str) -> None:
    sweep(lambda c: c["x"], {"x": Float(0.0, 1.0)}, budget=Budget(max_trials=2), storage=sqlite_url, name="installed")
    prefect_hpo = str(Path(sys.executable).with_name("prefect-hpo"))
    done = subprocess.run([prefect_hpo, "top", "installed", "--storage", sqlite_url], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.count("COMPLETE") == 2, done.stderr
