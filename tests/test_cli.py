"""`prefect-hpo`: each command on a real store, the `run`/`resume` pair through real Prefect flows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from prefect_hpo import Budget, Categorical, Float, Int, load_result, sweep
from prefect_hpo.cli import main
from prefect_hpo.records import Outcome, TrialState
from prefect_hpo.space import SearchSpace
from prefect_hpo.store.sql import SqlTrialStore

ROOT = Path(__file__).resolve().parents[1]

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
    assert len(lines) == 2 and lines[0].split()[0] == str(result.best_trial.number)  # type: ignore[union-attr]

    csv, parquet = tmp_path / "t.csv", tmp_path / "t.parquet"
    assert main(["export", "cli", "--storage", sqlite_url, "-o", str(csv)]) == 0
    assert main(["export", "cli", "--storage", sqlite_url, "--format", "parquet", "-o", str(parquet)]) == 0
    assert len(pd.read_csv(csv)) == len(pd.read_parquet(parquet)) == 4
    assert main(["plot", "cli", "--storage", sqlite_url, "-o", str(tmp_path / "cli-plots")]) == 0
    assert {p.name for p in (tmp_path / "cli-plots").iterdir()} == {"history.png", "importance.png", "parallel.png"}


def test_errors_name_the_problem(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep(lambda c: c["x"], {"x": Float(0.0, 1.0)}, budget=Budget(max_trials=1), storage=sqlite_url, name="from-python")
    assert main(["resume", "from-python", "--storage", sqlite_url]) == 2
    assert "was not started from a spec" in capsys.readouterr().out
    assert main(["status", "nope", "--storage", sqlite_url]) == 2
    assert "no sweep named 'nope'" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain: m:f\nspace: {}\nbudget: {max_concurrent: 0}\n")
    assert main(["run", str(bad)]) == 2
    assert "budget.max_concurrent" in capsys.readouterr().out


def test_the_installed_command(sqlite_url: str) -> None:
    sweep(lambda c: c["x"], {"x": Float(0.0, 1.0)}, budget=Budget(max_trials=2), storage=sqlite_url, name="installed")
    prefect_hpo = str(Path(sys.executable).with_name("prefect-hpo"))
    done = subprocess.run([prefect_hpo, "top", "installed", "--storage", sqlite_url], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.count("COMPLETE") == 2, done.stderr


def test_resume_raises_a_spent_budget_and_continues(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(write_spec(tmp_path, sqlite_url, max_trials=2))]) == 0
    capsys.readouterr()
    assert main(["resume", "cli", "--storage", sqlite_url]) == 2  # nothing to run: says how to raise it
    said = " ".join(capsys.readouterr().out.split())
    assert "sweep 'cli' has used its budget: 2 trials started of max_trials=2" in said
    assert "prefect-hpo resume cli --max-trials 12" in said
    assert main(["resume", "cli", "--storage", sqlite_url, "--max-trials", "3", "--time-limit", "600"]) == 0
    assert "sweep 'cli': 3 trials" in capsys.readouterr().out
    store = SqlTrialStore(sqlite_url)
    try:
        row = store.sweep(store.sweep_id("cli"))
    finally:
        store.close()
    assert row["budget"]["max_trials"] == 3 and row["budget"]["time_limit"] == 600
    assert row["spec"]["budget"]["max_trials"] == 3  # the next plain resume goes on from the raised budget
    assert main(["resume", "cli", "--storage", sqlite_url, "--max-trials", "-1"]) == 2
    assert "max_trials" in capsys.readouterr().out


# ---- the commands that read a store, on a store filled through its own API (no Prefect needed) ----

LONG_CHOICE = "a_rather_long_activation_name_that_goes_on"
LONG_ERROR = "ValueError: the input had shape (64, 12) where (64, 8) was expected by the first layer"


@pytest.fixture
def filled(tmp_path: Path) -> str:
    """A store with a wide sweep (six parameters, one conditional Int, a long choice, a failed trial) and
    a small one; its SQLite file's path."""
    path = tmp_path / "hpo.db"
    space = SearchSpace.build(
        {
            "learning_rate": Float(1e-5, 1e-1, log=True),
            "hidden_layers": Int(1, 4),
            "activation": Categorical(["relu", LONG_CHOICE]),
            "optimizer": Categorical(["adam", "sgd"]),
            "momentum_steps": Int(1, 9, when={"optimizer": "sgd"}),
            "weight_decay": Float(0.0, 0.1),
        }
    )
    store = SqlTrialStore(f"sqlite:///{path}")
    wide = store.open_sweep(
        "digits-mlp", space=space.to_dict(), objectives=[{"metric": "val_loss", "mode": "min"}], strategy="r", budget={}
    )
    for n in range(6):
        config: dict[str, Any] = {
            "learning_rate": 0.000123456789 * (n + 1),
            "hidden_layers": n % 4 + 1,
            "activation": LONG_CHOICE if n % 2 else "relu",
            "optimizer": "sgd" if n % 2 else "adam",
            "weight_decay": 0.0123456789 * n,
        }
        if n % 2:
            config["momentum_steps"] = n
        trial = store.create_trial(wide, n, config, f"h{n}")
        if n == 4:
            store.finish_trial(trial.id, Outcome(TrialState.FAIL, error=LONG_ERROR, duration=1.5))
        else:
            value = 1.23456789 + n * 1000.5
            store.finish_trial(trial.id, Outcome(TrialState.COMPLETE, (value,), duration=12.3456789, last_step=n))
    small = store.open_sweep(
        "cifar-resnet",
        space={"x": {"type": "float", "low": 0, "high": 1}},
        objectives=[{"metric": "acc", "mode": "max"}],
        strategy="tpe",
        budget={},
    )
    store.finish_trial(store.create_trial(small, 0, {"x": 0.5}, "h").id, Outcome(TrialState.COMPLETE, (0.987654321,)))
    store.close()
    return str(path)


def piped(*args: str) -> subprocess.CompletedProcess[str]:
    """`prefect-hpo ARGS` as its own process with its output piped (rich then draws 80 columns)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run(
        [sys.executable, "-m", "prefect_hpo.cli", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )


def test_a_piped_table_fits_80_columns_with_every_number_whole(filled: str) -> None:
    done = piped("status", "digits-mlp", "--storage", filled)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    table = lines[1 : lines.index(next(line for line in lines if line.startswith("left out")))]
    assert len(table) == 2 + 1 + 6 and all(len(line) <= 80 for line in table)  # headers (one folds), rule, 6 trials
    for number in ("1.23457", "1001.73", "5003.73", "0.000123457", "0.000740741"):
        assert number in done.stdout  # before: folded inside its cell, as "0.00" over "0123" over "457"
    assert "a_rather_long_a…" in done.stdout and LONG_CHOICE not in done.stdout
    assert "left out to fit 80 columns: weight_decay, momentum_steps, error, last_step, duration" in done.stdout

    wide = piped("status", "digits-mlp", "--storage", filled, "--wide")
    assert wide.returncode == 0, wide.stderr
    assert LONG_CHOICE in wide.stdout and LONG_ERROR in wide.stdout and "left out" not in wide.stdout
    header = next(line for line in wide.stdout.splitlines() if line.startswith("number"))
    assert header.split() == [
        "number",
        "state",
        "val_loss",
        "learning_rate",
        "hidden_layers",
        "activation",
        "optimizer",
        "weight_decay",
        "momentum_steps",
        "error",
        "last_step",
        "duration",
    ]
    row = next(line for line in wide.stdout.splitlines() if line.split()[:2] == ["3", "COMPLETE"])
    assert row.split() == [
        "3",
        "COMPLETE",
        "3002.73",
        "0.000493827",
        "4",
        LONG_CHOICE,
        "sgd",
        "0.037037",
        "3",
        "3",
        "12.3457",
    ]


def test_ls_lists_the_sweeps_of_a_store(filled: str) -> None:
    done = piped("ls", "--storage", filled)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"sweeps in sqlite:///{filled}" and all(len(line) <= 80 for line in lines[1:])
    assert lines[1].split() == ["name", "status", "trials", "COMPLETE", "FAIL", "best", "updated", "objective"]
    digits = next(line.split() for line in lines if line.startswith("digits-mlp"))
    assert digits[:6] == ["digits-mlp", "created", "6", "5", "1", "1.23457"] and digits[-2:] == ["ago", "val_loss:min"]
    cifar = next(line.split() for line in lines if line.startswith("cifar-resnet"))
    assert cifar[:6] == ["cifar-resnet", "created", "1", "1", "0", "0.987654"] and cifar[-1] == "acc:max"


def test_a_wrong_name_gets_close_matches_and_points_at_ls(filled: str) -> None:
    done = piped("top", "digits-mpl", "--storage", filled)
    assert done.returncode == 2
    assert done.stdout.strip() == (
        f"error: no sweep named 'digits-mpl' in 'sqlite:///{filled}' (it holds 2 sweeps); "
        f"did you mean 'digits-mlp'? list them with `prefect-hpo ls --storage {filled}`"
    )


def test_storage_help_names_the_default_under_prefect_hpo_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PREFECT_HPO_HOME", str(tmp_path / "my-home"))
    for command in ("ls", "status"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        help_text = "".join(capsys.readouterr().out.split())  # argparse breaks lines at spaces and hyphens
        assert f"(default:{tmp_path / 'my-home' / 'hpo.db'},i.e.hpo.dbin$PREFECT_HPO_HOME" in help_text


def test_a_store_that_is_not_there_is_named_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "hpo2.db"
    assert main(["ls", "--storage", str(missing)]) == 2
    assert f"no trial store at {missing}" in capsys.readouterr().out and not missing.exists()
    assert main(["status", "x", "--storage", str(tmp_path / "typo" / "hpo.db")]) == 2
    assert f"the folder '{tmp_path / 'typo'}' does not exist" in capsys.readouterr().out


def test_export_does_not_overwrite_a_file_unless_told(
    filled: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    kept = tmp_path / "digits-mlp.csv"
    kept.write_text("my notes\n")
    assert main(["export", "digits-mlp", "--storage", filled]) == 2
    said = capsys.readouterr().out
    assert "digits-mlp.csv exists; pass --force to overwrite it, or -o FILE" in said
    assert kept.read_text() == "my notes\n"
    assert main(["export", "digits-mlp", "--storage", filled, "--force"]) == 0
    table = pd.read_csv(kept, dtype=str)
    assert len(table) == 6 and table["params_momentum_steps"].dropna().tolist() == ["1", "3", "5"]
