"""What the store's tests share: a small sweep to open."""

from __future__ import annotations

from typing import Any

from prefect_hpo.store import SqlTrialStore
from prefect_hpo.store.sweeps import Sweeps

SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0, "log": False}}
OBJ = [{"metric": "loss", "mode": "min"}]
BUDGET = {"max_trials": 3}


def open_sweep(store: SqlTrialStore | Sweeps, name: str = "s", space: dict[str, Any] = SPACE) -> int:
    return store.open_sweep(name, space=space, objectives=OBJ, strategy="tpe", budget=BUDGET)
