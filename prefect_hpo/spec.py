"""`SweepSpec`: a whole sweep as one pydantic model, the parameter of the sweep deployment.

Prefect renders a flow parameter typed with a pydantic model as a form in its UI
(nested models as sections, `Literal` fields as drop-downs), and the same model
travels as JSON in `prefect.yaml`, `run_deployment(parameters=...)` and schedules.
Everything here is plain data; `run_spec` turns it into one `sweep()` call.

Validation happens as early as each check can run. The JSON schema Prefect stores with the
deployment carries what JSON schema can say (required fields, the sweep name's and the import
path's form, a non-empty space, the strategy's choices, numeric bounds), so the Prefect server
refuses a bad run when it is created (`prefect deployment run`, `run_deployment`, the UI form).
What needs our code (a parameter's `low < high`, a known objective mode, a scheduler's options)
runs in the validators below: when the flow run validates its parameter, before the flow's body
imports anything, so a bad spec fails its run at once with the field named.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from prefect_hpo.api import sweep
from prefect_hpo.arguments import SEED_MAX
from prefect_hpo.budget import Budget
from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.executors.settings import WorkPoolExecutor
from prefect_hpo.importing import load_function
from prefect_hpo.names import NAME_PATTERN, NAME_RULE
from prefect_hpo.objective import build_objectives
from prefect_hpo.result import SweepResult
from prefect_hpo.schedulers import build_scheduler
from prefect_hpo.space import SearchSpace
from prefect_hpo.storage_refs import is_reference
from prefect_hpo.store.urls import SECRET_QUERY_KEYS, has_credentials, mask_url

#: A storage value with no password in it: neither `scheme://user:password@` nor a query credential.
#: In the JSON schema of the sweep deployment's form, so that Prefect's server refuses to create a flow
#: run whose `spec.storage` holds a password (it checks parameters against the schema before storing
#: them) and the UI's form flags it. Lookaheads only: both Python's and the browser's regexes have them.
#: The password as SQLAlchemy reads it: after the user name's first ':', up to the next '@' ('/', '?',
#: '#' and ':' in it included).
_NO_CREDENTIALS = r"^(?!.*://[^:/]*:[^@]+@)(?!.*[?&](?:" + "|".join(sorted(SECRET_QUERY_KEYS)) + r")=).*$"

# what `load_function` accepts as an import path (module:function); a sweep's name: prefect_hpo.names
IMPORT_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$"


#: What the budget form adds to each `Budget` field: its bounds (in the JSON schema, so that the server refuses
#: a bad value) and the words beside it. The fields, their types and their defaults are Budget's own.
_BUDGET_FORM: dict[str, dict[str, Any]] = {
    "max_trials": {"ge": 0, "description": "trials to start in all (continued runs included)"},
    "max_concurrent": {"ge": 1, "description": "trials running at once"},
    "time_limit": {"gt": 0, "description": "wall seconds for the run"},
    "compute_time_limit": {"gt": 0, "description": "summed trial seconds"},
    "trial_time_limit": {"gt": 0, "description": "seconds one trial may run"},
    "max_failed_trials": {"ge": 0, "description": "failures allowed before the sweep stops"},
    "fail_fast": {
        "ge": 0,
        "description": "stop when this many first trials fail with the same error (0 or empty: never)",
    },
    "min_steps": {"ge": 0, "description": "steps before a scheduler may stop a trial"},
    "max_steps": {"ge": 0, "description": "steps after which a trial completes"},
    "max_total_steps": {"ge": 0, "description": "steps of all trials together"},
    "trials_per_run": {"ge": 0, "description": "new trials each run may start: a nightly run adds this many"},
}


class _BudgetForm(BaseModel):
    """The limits of a sweep (see `prefect_hpo.Budget`); empty means no limit."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _limits_agree(self) -> _BudgetForm:
        """The checks `Budget` makes across fields, as a validation error."""
        _as_value_error(self.to_budget)
        return self

    def to_budget(self) -> Budget:
        return Budget(**self.model_dump())


def _budget_spec() -> type[_BudgetForm]:
    """`BudgetSpec`: Budget's fields, with their types and defaults, and the form's bounds and words."""
    fields = dataclasses.fields(Budget)
    if {f.name for f in fields} != set(_BUDGET_FORM):  # a new Budget field needs its bounds and words here
        raise TypeError(f"_BUDGET_FORM names {sorted(_BUDGET_FORM)}, Budget has {sorted(f.name for f in fields)}")
    types = typing.get_type_hints(Budget)
    definitions: dict[str, Any] = {f.name: (types[f.name], Field(f.default, **_BUDGET_FORM[f.name])) for f in fields}
    return create_model(
        "BudgetSpec", __base__=_BudgetForm, __doc__=_BudgetForm.__doc__, __module__=__name__, **definitions
    )


if TYPE_CHECKING:
    BudgetSpec = _BudgetForm
else:
    BudgetSpec = _budget_spec()


class SchedulerSpec(BaseModel):
    """Early stopping; leave a field empty for the scheduler's default."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["fifo", "median", "asha", "hyperband"] = "fifo"
    max_t: int | None = Field(None, ge=1, description="the step at which a trial completes")
    grace_period: int | None = Field(None, ge=1, description="first rung / steps before the median rule applies")
    reduction_factor: float | None = Field(None, gt=1, description="ASHA/Hyperband: keep the top 1/this at a rung")
    brackets: int | None = Field(None, ge=1, description="Hyperband: number of brackets")
    mode: Literal["stopping", "promotion"] | None = Field(None, description="ASHA/Hyperband form")

    @model_validator(mode="after")
    def _options_agree(self) -> SchedulerSpec:
        """The scheduler's own checks (e.g. grace_period <= max_t), as a validation error."""
        _as_value_error(lambda: build_scheduler(self.to_option()))
        return self

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
    """One sweep, in plain data: what the UI form, prefect.yaml and run_deployment carry.

    Prefect stores it as a flow-run parameter, so `storage` names the store without a password: by
    reference ("env:NAME", "block:NAME"; resolved on the worker that runs the sweep and on each trial's)
    or as a URL without credentials. A URL with a password is refused.
    """

    # hide_input_in_errors: a refused storage URL must not be echoed, with its password, into an error
    # that may end up in a flow run's state message or logs
    model_config = ConfigDict(extra="forbid", regex_engine="python-re", hide_input_in_errors=True)

    # the patterns go into the JSON schema (the server checks them); the validators below say the fix
    name: str = Field(
        json_schema_extra={"pattern": NAME_PATTERN},
        description="the sweep's name: a run with the same name continues it",
    )
    train: str = Field(
        json_schema_extra={"pattern": IMPORT_PATH_PATTERN},
        description="import path of the training function (module:function), e.g. flows.digits_mlp:train",
    )
    space: dict[str, Any] = Field(
        min_length=1,
        description="parameter -> {type: float|int|categorical, low, high, log, step, choices, when} or a value",
    )
    objective: str | list[str] = Field("loss", description="'metric:mode' (min, max, min_global, max_global)")
    strategy: Literal["grid", "random", "tpe", "gp", "cmaes", "qmc", "nsga2", "rl", "bohb", "pbt"] = "tpe"
    scheduler: SchedulerSpec = Field(default_factory=lambda: SchedulerSpec())
    budget: BudgetSpec = Field(default_factory=lambda: BudgetSpec())
    executor: ExecutorSpec = Field(default_factory=lambda: ExecutorSpec())
    storage: str | None = Field(
        None,
        pattern=_NO_CREDENTIALS,
        description="the trial store: 'env:VARIABLE' or 'block:SECRET-BLOCK' holding its URL, or a SQLAlchemy "
        "URL without a password (default: ~/.prefect_hpo)",
    )
    seed: int | None = Field(None, ge=0, le=SEED_MAX, description="makes sampling reproducible")
    fork: bool = Field(False, description="name taken by another space or objective: run as <name>-fork-<k>")

    @field_validator("storage", mode="before")
    @classmethod
    def _no_password(cls, value: object) -> object:
        """A URL with a password would sit in Prefect's database as this flow run's parameter."""
        if isinstance(value, str) and not is_reference(value) and has_credentials(value):
            raise ValueError(
                f"storage {mask_url(value)!r} carries a password, which Prefect would store with the flow run's "
                "parameters; name the store by reference: 'env:HPO_DB_URL' (an environment variable set on the "
                "workers) or 'block:hpo-db' (a Prefect Secret block holding the URL)"
            )
        return value

    @field_validator("name")
    @classmethod
    def _name_is_usable(cls, name: str) -> str:
        if not re.fullmatch(NAME_PATTERN, name):
            raise ValueError(f"{name!r} is not usable; {NAME_RULE}")
        return name

    @field_validator("train")
    @classmethod
    def _train_is_an_import_path(cls, train: str) -> str:
        if not re.match(IMPORT_PATH_PATTERN, train):
            raise ValueError(
                f"{train!r} is not an import path; write 'package.module:function' (the module importable "
                "from the folder the worker runs in, or installed)"
            )
        return train

    @field_validator("space")
    @classmethod
    def _space_is_valid(cls, space: dict[str, Any]) -> dict[str, Any]:
        """Every parameter as `SearchSpace` reads it (bounds, types, conditions); kept in its plain form."""
        _as_value_error(lambda: SearchSpace.build(space))
        return space

    @field_validator("objective")
    @classmethod
    def _objective_is_valid(cls, objective: str | list[str]) -> str | list[str]:
        """Each 'metric:mode' names a known mode."""
        _as_value_error(lambda: build_objectives(objective))
        return objective


def _as_value_error(check: Callable[[], object]) -> None:
    """Run `check`; our own error becomes a ValueError, which pydantic reports under the field's name."""
    try:
        check()
    except PrefectHPOError as exc:
        raise ValueError(str(exc)) from None


def run_spec(spec: SweepSpec) -> SweepResult:
    """Run the sweep `spec` describes (as a subflow when called inside a flow)."""
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
