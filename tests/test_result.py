"""`SweepResult`'s tables and exports, on a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from prefect_hpo import Categorical, Float, Int
from prefect_hpo.records import Outcome, TrialState
from prefect_hpo.result import result_from_store
from prefect_hpo.space import SearchSpace
from prefect_hpo.store.sql import SqlTrialStore

SPACE = SearchSpace.build(
    {"opt": Categorical(["adam", "sgd"]), "steps": Int(1, 9, when={"opt": "sgd"}), "lr": Float(0.0, 1.0)}
)


def test_a_conditional_int_stays_an_integer_in_the_table_and_every_export(sqlite_url: str, tmp_path: Path) -> None:
    store = SqlTrialStore(sqlite_url)
    sweep_id = store.open_sweep(
        "int", space=SPACE.to_dict(), objectives=[{"metric": "loss", "mode": "min"}], strategy="random", budget={}
    )
    configs = [
        {"opt": "sgd", "steps": 3, "lr": 0.5},
        {"opt": "adam", "lr": 0.25},
        {"opt": "sgd", "steps": 7, "lr": 1.0},
    ]
    for number, config in enumerate(configs):
        trial = store.create_trial(sweep_id, number, config, f"h{number}")
        if number == 1:
            store.finish_trial(trial.id, Outcome(TrialState.FAIL, error="boom"))  # no last_step either
        else:
            store.finish_trial(trial.id, Outcome(TrialState.COMPLETE, values=(config["lr"],), last_step=number))
    result = result_from_store(store, sweep_id)
    store.close()

    trials = result.trials
    assert str(trials["params_steps"].dtype) == "Int64" and str(trials["last_step"].dtype) == "Int64"
    assert trials["params_steps"].tolist()[0] == 3 and pd.isna(trials["params_steps"].tolist()[1])
    assert str(trials["params_lr"].dtype) == "float64"  # a Float stays a float
    assert str(result.top(1)["params_steps"].dtype) == "Int64"

    csv = pd.read_csv(result.to_csv(tmp_path / "t.csv"), dtype=str)
    assert csv["params_steps"].tolist()[0::2] == ["3", "7"] and pd.isna(csv["params_steps"][1])
    assert csv["last_step"].tolist()[0::2] == ["0", "2"]
    parquet = pd.read_parquet(result.to_parquet(tmp_path / "t.parquet"))
    assert str(parquet["params_steps"].dtype) == "Int64" and parquet["params_steps"].tolist()[2] == 7
    as_json = json.loads(json.dumps(result.to_dict()))
    assert [t["params_steps"] for t in as_json["trials"]] == [3, None, 7]
