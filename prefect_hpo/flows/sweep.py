"""The sweep as a deployment: one flow whose parameter is a `SweepSpec`, so a worker can run it
and the Prefect UI renders a form for it.

`sweep()` takes the training function itself; a deployment cannot carry a function,
so the spec names it by import path (`package.module:function`), imported on the
worker. The sweep runs as a subflow; with `executor.kind = "work_pool"` its trials run
as flow runs of the trial deployment on that pool, otherwise in this flow run's own
processes. A run with the name of an existing sweep continues it: a nightly schedule
with `budget.trials_per_run` adds that many trials each night.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from prefect_hpo.spec import SweepSpec, run_spec, summary


@flow(name="hpo-run-sweep")
def hpo_run_sweep(spec: SweepSpec) -> dict[str, Any]:
    """Run the sweep `spec` describes; returns its summary (best configuration and value, trials, budget)."""
    return summary(run_spec(spec))
