"""prefect_hpo: hyperparameter optimisation that runs as Prefect flows, with a durable trial store.

The names below load lazily, so that worker processes (which import only the
trial runtime and the store) do not pay for importing Prefect.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prefect_hpo.executors.main_script import top_level_entry

__version__ = "0.1.0"

_EXPORTS = {
    "sweep": "prefect_hpo.api",
    "run_with_config": "prefect_hpo.retrain",
    "start_sweep": "prefect_hpo.controller",
    "SweepController": "prefect_hpo.controller",
    "SweepSpec": "prefect_hpo.spec",
    "Float": "prefect_hpo.space",
    "Int": "prefect_hpo.space",
    "Categorical": "prefect_hpo.space",
    "Fixed": "prefect_hpo.space",
    "SearchSpace": "prefect_hpo.space",
    "Objective": "prefect_hpo.objective",
    "Budget": "prefect_hpo.budget",
    "SweepResult": "prefect_hpo.result",
    "load_result": "prefect_hpo.result",
    "wait_for_plots": "prefect_hpo.reporting.plots_artifact",
    "TrialState": "prefect_hpo.records",
    "TrialRecord": "prefect_hpo.records",
    "Trial": "prefect_hpo.trial",
    "SqlTrialStore": "prefect_hpo.store.sql",
    "WorkPoolExecutor": "prefect_hpo.executors.settings",
    "ClusterExecutor": "prefect_hpo.executors.settings",
    "PrefectHPOError": "prefect_hpo.errors",
    "SearchSpaceError": "prefect_hpo.errors",
    "ObjectiveError": "prefect_hpo.errors",
    "BudgetError": "prefect_hpo.errors",
    "StrategyError": "prefect_hpo.errors",
    "StoreError": "prefect_hpo.errors",
    "SweepConflictError": "prefect_hpo.errors",
    "TrialFunctionError": "prefect_hpo.errors",
    "TooManyFailedTrials": "prefect_hpo.errors",
    "TrialsFailAlike": "prefect_hpo.errors",
    "TrialStopped": "prefect_hpo.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from prefect_hpo.api import (
        sweep as sweep,
    )
    from prefect_hpo.budget import (
        Budget as Budget,
    )
    from prefect_hpo.controller import (
        SweepController as SweepController,
        start_sweep as start_sweep,
    )
    from prefect_hpo.errors import (
        BudgetError as BudgetError,
        ObjectiveError as ObjectiveError,
        PrefectHPOError as PrefectHPOError,
        SearchSpaceError as SearchSpaceError,
        StoreError as StoreError,
        StrategyError as StrategyError,
        SweepConflictError as SweepConflictError,
        TooManyFailedTrials as TooManyFailedTrials,
        TrialFunctionError as TrialFunctionError,
        TrialsFailAlike as TrialsFailAlike,
        TrialStopped as TrialStopped,
    )
    from prefect_hpo.executors.settings import (
        ClusterExecutor as ClusterExecutor,
        WorkPoolExecutor as WorkPoolExecutor,
    )
    from prefect_hpo.objective import (
        Objective as Objective,
    )
    from prefect_hpo.records import (
        TrialRecord as TrialRecord,
        TrialState as TrialState,
    )
    from prefect_hpo.reporting.plots_artifact import (
        wait_for_plots as wait_for_plots,
    )
    from prefect_hpo.result import (
        SweepResult as SweepResult,
        load_result as load_result,
    )
    from prefect_hpo.retrain import (
        run_with_config as run_with_config,
    )
    from prefect_hpo.space import (
        Categorical as Categorical,
        Fixed as Fixed,
        Float as Float,
        Int as Int,
        SearchSpace as SearchSpace,
    )
    from prefect_hpo.spec import (
        SweepSpec as SweepSpec,
    )
    from prefect_hpo.store.sql import (
        SqlTrialStore as SqlTrialStore,
    )
    from prefect_hpo.trial import (
        Trial as Trial,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'prefect_hpo' has no attribute {name!r}")
    stand_in = top_level_entry(name)  # the fork server loading a user's script: no Prefect for sweep()
    if stand_in is not None:
        return stand_in
    return getattr(importlib.import_module(module), name)
