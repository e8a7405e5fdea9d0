"""`SweepSpec`: a whole sweep as one pydantic model, the parameter of the sweep deployment.

Prefect renders a flow parameter typed with a pydantic model as a form in its UI
(nested models as sections, `Literal` fields as drop-downs), and the same model
travels as JSON in `prefect.yaml`, `run_deployment(parameters=...)` and schedules.
Everything here is plain data; `run_spec` turns it into one `sweep()` call, which
validates it again and names any bad field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from prefect_hpo.budget import Budget
from prefect_hpo.executors.workpool import WorkPoolExecutor
from prefect_hpo.importing import load_function
from prefect_hpo.result import SweepResult


class BudgetSpec(BaseModel):
    """The limits of a sweep (see `prefect_hpo.Budget`); empty means no limit."""

    model_config = ConfigDict(extra="forbid")

    max_trials: int | None = Field(20, ge=0, description="trials to start in all (continued runs included)")
    trials_per_run: int | None = Field(
        None, ge=0, description="new trials each run may start: a nightly run adds this many"
    )
    max_concurrent: int = Field(1, ge=1, description="trials running at once")
    time_limit: float | None = Field(None, gt=0, description="wall seconds for the run")
    compute_time_limit: float | None = Field(None, gt=0, description="summed trial seconds")
    trial_time_limit: float | None = Field(None, gt=0, description="seconds one trial may run")
    max_failed_trials: int | None = Field(None, ge=0, description="failures allowed before the sweep stops")
    min_steps: int | None = Field(None, ge=0, description="steps before a scheduler may stop a trial")
    max_steps: int | None = Field(None, ge=0, description="steps after which a trial completes")
    max_total_steps: int | None = Field(None, ge=0, description="steps of all trials together")

    def to_budget(self) -> Budget:
        return Budget(**self.model_dump())


class SchedulerSpec(BaseModel):
    """Early stopping; leave a field empty for the scheduler's default."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["fifo", "median", "asha", "hyperband"] = "fifo"
    max_t: int | None = Field(None, ge=1, description="the step at which a trial completes")
    grace_period: int | None = Field(None, ge=1, description="first rung / steps before the median rule applies")
    reduction_factor: float | None = Field(None, gt=1, description="ASHA/Hyperband: keep the top 1/this at a rung")
    brackets: int | None = Field(None, ge=1, description="Hyperband: number of brackets")
    mode: Literal["stopping", "promotion"] | None = Field(None, description="ASHA/Hyperband form")

    def to_option(self) -> dict[str, Any] | None:
        options = self.model_dump(exclude_none=True)
        return None if options == {"type": "fifo"} else options


class ExecutorSpec(BaseModel):
    """Where trials run."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "work_pool"] = Field("local", description="this flow run's machine, or a work pool")
    workers: Literal["processes", "threads"] = Field("processes", description="local: how trials run")
    pool: str = Field("hpo", description="work_pool: the pool (with gpu and cpu queues)")
    gpu_when: dict[str, Any] = Field(
        default_factory=dict, description="work_pool: config values that send a trial to the gpu queue"
    )

    def to_executor(self) -> WorkPoolExecutor | None:
        if self.kind == "local":
            return None
        wants = dict(self.gpu_when)
        return WorkPoolExecutor(
            pool=self.pool,
            resources=lambda config: {"gpu": 1} if wants and all(config.get(k) == v for k, v in wants.items()) else {},
        )


class SweepSpec(BaseModel):
    """One sweep, in plain data: what the UI form, prefect.yaml and run_deployment carry."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the sweep's name: a run with the same name continues it")
    train: str = Field(description="import path of the training function, e.g. flows.digits_mlp:train")
    space: dict[str, Any] = Field(
        description="parameter -> {type: float|int|categorical, low, high, log, step, choices, when} or a value"
    )
    objective: str | list[str] = Field("loss", description="'metric:mode' (min, max, min_global, max_global)")
    strategy: Literal["grid", "random", "tpe", "gp", "cmaes", "qmc", "nsga2", "rl", "bohb"] = "tpe"
    scheduler: SchedulerSpec = Field(default_factory=lambda: SchedulerSpec())
    budget: BudgetSpec = Field(default_factory=lambda: BudgetSpec())
    executor: ExecutorSpec = Field(default_factory=lambda: ExecutorSpec())
    storage: str | None = Field(None, description="SQLAlchemy URL of the trial store (default: ~/.prefect_hpo)")
    seed: int | None = None
    fork: bool = Field(False, description="name taken by another space or objective: run as <name>-fork-<k>")


def run_spec(spec: SweepSpec) -> SweepResult:
    """Run the sweep `spec` describes (as a subflow when called inside a flow)."""
    from prefect_hpo.api import sweep

    return sweep(
        load_function(spec.train),
        spec.space,
        spec.objective,
        spec.strategy,
        spec.budget.to_budget(),
        spec.storage,
        spec.name,
        scheduler=spec.scheduler.to_option(),
        seed=spec.seed,
        workers=spec.executor.workers,
        executor=spec.executor.to_executor(),
        spec=spec.model_dump(mode="json"),
        fork=spec.fork,
    )


def summary(result: SweepResult) -> dict[str, Any]:
    """What a sweep flow run returns: plain and small (the store has the rest)."""
    return {
        "name": result.name,
        "best_config": result.best_config,
        "best_value": result.best_value,
        "trials": len(result.records),
        "stop_reason": result.stop_reason,
        "budget": result.budget,
    }
