"""ClearML's HyperParameterOptimizer vocabulary, on prefect_hpo.

For users coming from ClearML: the parameter classes, strategy names, objective signs and
controller arguments they know, converted into our search space, strategies, `Objective` and
`Budget`, and run by `start_sweep`. What differs, and why:

- The training function stands where ClearML's `base_task_id` (a task to clone) stands: a
  callable `train(config, trial)`, or an import path "module:function" for work pools.
- The objective metric the trial reports is `<title>_<series>` (`trial.report(step, validation_accuracy=...)`
  for title "validation" and series "accuracy"): metric names are keyword arguments here.
- `execution_queue` is a queue of our work pool (`WorkPoolExecutor`): the trial runs as a flow run
  that a Prefect worker on that queue picks up. None (the default) runs trials on this machine.
- Times are minutes, as in ClearML; our `Budget` keeps seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect_hpo.arguments import is_number
from prefect_hpo.budget import Budget
from prefect_hpo.controller import SweepController, start_sweep
from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.executors.settings import WorkPoolExecutor
from prefect_hpo.importing import load_function
from prefect_hpo.objective import Objective
from prefect_hpo.records import Config, TrialRecord
from prefect_hpo.space import Categorical, Float, Int
from prefect_hpo.trial import wants_trial

_SET_PREFIX = "parameter_set"


@dataclass(frozen=True)
class UniformParameterRange:
    """A float range; with `step_size`, only min_value + k * step_size (ClearML's quantized range)."""

    name: str
    min_value: float
    max_value: float
    step_size: float | None = None
    include_max_value: bool = True

    def to_param(self) -> Float:
        high = self.max_value
        if self.step_size is not None and not self.include_max_value:
            high = self.max_value - self.step_size
        return Float(float(self.min_value), float(high), step=self.step_size)


@dataclass(frozen=True)
class UniformIntegerParameterRange:
    """An integer range (step 1 unless `step_size`); `include_max_value=False` leaves max_value out."""

    name: str
    min_value: int
    max_value: int
    step_size: int = 1
    include_max_value: bool = True

    def to_param(self) -> Int:
        high = self.max_value if self.include_max_value else self.max_value - self.step_size
        return Int(self.min_value, high, step=self.step_size)


@dataclass(frozen=True)
class LogUniformParameterRange:
    """`base ** e` for an exponent e uniform in [min_value, max_value] (ClearML's meaning: the limits
    are exponents); with `step_size`, the exponent moves in steps and the values are a discrete list."""

    name: str
    min_value: float
    max_value: float
    base: float = 10.0
    step_size: float | None = None
    include_max_value: bool = True

    def to_param(self) -> Float | Categorical:
        if self.step_size is None:
            return Float(self.base**self.min_value, self.base**self.max_value, log=True)
        if self.step_size <= 0:
            raise PrefectHPOError(f"parameter {self.name!r}: step_size must be positive, got {self.step_size!r}")
        count = math.floor((self.max_value - self.min_value) / self.step_size + 1e-9)
        exponents = [self.min_value + i * self.step_size for i in range(count + 1)]
        if not self.include_max_value and exponents and math.isclose(exponents[-1], self.max_value):
            exponents.pop()
        return Categorical([self.base**e for e in exponents])


@dataclass(frozen=True)
class DiscreteParameterRange:
    """One of the listed values."""

    name: str
    values: Sequence[Any]

    def to_param(self) -> Categorical:
        return Categorical(list(self.values))


@dataclass(frozen=True)
class ParameterSet:
    """Parameters that move together: one of `parameter_combinations` (dicts of name -> value) is chosen
    per trial, and its names reach the training function as ordinary parameters."""

    parameter_combinations: Sequence[Mapping[str, Any]]
    name: str = _SET_PREFIX

    def to_param(self) -> Categorical:
        return Categorical([dict(c) for c in self.parameter_combinations])


Parameter = (
    UniformParameterRange
    | UniformIntegerParameterRange
    | LogUniformParameterRange
    | DiscreteParameterRange
    | ParameterSet
)


# ---- strategies ---------------------------------------------------------------------------------


class GridSearch:
    """Every configuration of the grid, once ("grid")."""

    strategy = "grid"


class RandomSearch:
    """Random sampling ("random")."""

    strategy = "random"


class OptimizerOptuna:
    """Optuna's TPE ("tpe")."""

    strategy = "tpe"


class OptimizerBOHB:
    """BOHB: TPE models per budget under Hyperband (our "bohb" with the "hyperband" scheduler), budgets
    from `min_iteration_per_job` to `max_iteration_per_job` steps."""

    strategy = "bohb"


_OPTIMIZERS: tuple[type, ...] = (GridSearch, RandomSearch, OptimizerOptuna, OptimizerBOHB)
_SIGNS = {"min": "min", "max": "max", "min_global": "min_global", "max_global": "max_global"}


def search_space(hyper_parameters: Sequence[Parameter]) -> dict[str, Any]:
    """Our search space from ClearML parameter objects (parameter sets under `parameter_set_<i>`)."""
    space: dict[str, Any] = {}
    sets = 0
    for parameter in hyper_parameters:
        if not hasattr(parameter, "to_param"):
            raise PrefectHPOError(
                f"hyper_parameters: {parameter!r} is not a parameter; use UniformParameterRange, "
                "UniformIntegerParameterRange, LogUniformParameterRange, DiscreteParameterRange or ParameterSet"
            )
        name = parameter.name
        if isinstance(parameter, ParameterSet):
            name = f"{_SET_PREFIX}_{sets}"
            sets += 1
        if name in space:
            raise PrefectHPOError(f"hyper_parameters: {name!r} appears twice; give each parameter one range")
        space[name] = parameter.to_param()
    return space


def flatten(config: Config) -> Config:
    """A configuration with each chosen parameter set's names spread into it."""
    flat: Config = {}
    for name, value in config.items():
        if name.startswith(f"{_SET_PREFIX}_") and isinstance(value, Mapping):
            flat.update(value)
        else:
            flat[name] = value
    return flat


def objective_of(title: str, series: str | None, sign: str) -> Objective:
    """ClearML's objective (title, series, sign) as ours: the metric `<title>_<series>`."""
    if sign not in _SIGNS:
        raise PrefectHPOError(
            f"objective_metric_sign {sign!r} is not one of {list(_SIGNS)}; 'min'/'max' judge a trial's last "
            "value, 'min_global'/'max_global' its best"
        )
    metric = f"{title}_{series}" if series else title
    return Objective(metric, _SIGNS[sign])  # type: ignore[arg-type]


def _minutes(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    if not is_number(value) or value <= 0:
        raise PrefectHPOError(f"{what} is in minutes and must be positive, got {value!r}")
    return float(value) * 60.0


def budget_of(
    *,
    total_max_jobs: int | None,
    max_number_of_concurrent_tasks: int,
    optimization_time_limit: float | None,
    compute_time_limit: float | None,
    time_limit_per_job: float | None,
    min_iteration_per_job: int | None,
    max_iteration_per_job: int | None,
    bohb: bool,
) -> Budget:
    """ClearML's limits (times in minutes) as our Budget (seconds); BOHB's iterations go to its scheduler."""
    return Budget(
        max_trials=total_max_jobs,
        max_concurrent=max_number_of_concurrent_tasks,
        time_limit=_minutes(optimization_time_limit, "optimization_time_limit"),
        compute_time_limit=_minutes(compute_time_limit, "compute_time_limit"),
        trial_time_limit=_minutes(time_limit_per_job, "time_limit_per_job"),
        min_steps=None if bohb else min_iteration_per_job,
        max_steps=None if bohb else max_iteration_per_job,
    )


@dataclass
class HyperParameterOptimizer:
    """ClearML's controller: `start()` runs the sweep in the background; `wait()`, `stop()`,
    `get_top_experiments(k)` and the rest watch and steer it (see `SweepController`)."""

    base_task_id: Callable[..., Any] | str
    hyper_parameters: Sequence[Parameter]
    objective_metric_title: str
    objective_metric_series: str | None = None
    objective_metric_sign: str = "min"
    optimizer_class: type = RandomSearch
    max_number_of_concurrent_tasks: int = 10
    execution_queue: str | None = None
    optimization_time_limit: float | None = None
    compute_time_limit: float | None = None
    total_max_jobs: int | None = None
    min_iteration_per_job: int | None = None
    max_iteration_per_job: int | None = None
    time_limit_per_job: float | None = None
    save_top_k_tasks_only: int | None = None
    storage: str | None = None
    name: str | None = None
    seed: int | None = None
    pool: str = "hpo"
    #: anything else `sweep()` takes (workers, checkpoints, scheduler, ...)
    options: dict[str, Any] = field(default_factory=dict)
    _controller: SweepController | None = field(default=None, init=False, repr=False)

    def start(self) -> bool:
        """Start the optimization in the background; True once it runs (bad input raises here)."""
        if self.optimizer_class not in _OPTIMIZERS:
            raise PrefectHPOError(
                f"optimizer_class {self.optimizer_class!r} is not one of "
                f"{[o.__name__ for o in _OPTIMIZERS]}; pass the class itself, e.g. optimizer_class=OptimizerOptuna"
            )
        bohb = self.optimizer_class is OptimizerBOHB
        options = dict(self.options)
        if bohb:
            options.setdefault(
                "scheduler",
                {
                    "type": "hyperband",
                    "grace_period": self.min_iteration_per_job or 1,
                    "max_t": self.max_iteration_per_job or 27,
                    "reduction_factor": 3,
                },
            )
        if self.execution_queue is not None:
            options.setdefault(
                "executor", WorkPoolExecutor(pool=self.pool, queues={}, default_queue=self.execution_queue)
            )
        if self.save_top_k_tasks_only is not None:
            options.setdefault("keep_top_k", self.save_top_k_tasks_only)
        self._controller = start_sweep(
            self._train(),
            search_space(self.hyper_parameters),
            objective_of(self.objective_metric_title, self.objective_metric_series, self.objective_metric_sign),
            self.optimizer_class.strategy,  # type: ignore[attr-defined]
            budget_of(
                total_max_jobs=self.total_max_jobs,
                max_number_of_concurrent_tasks=self.max_number_of_concurrent_tasks,
                optimization_time_limit=self.optimization_time_limit,
                compute_time_limit=self.compute_time_limit,
                time_limit_per_job=self.time_limit_per_job,
                min_iteration_per_job=self.min_iteration_per_job,
                max_iteration_per_job=self.max_iteration_per_job,
                bohb=bohb,
            ),
            self.storage,
            self.name,
            seed=self.seed,
            **options,
        )
        return True

    start_locally = start  # ClearML's name for running the controller in this process

    def _train(self) -> Callable[..., Any]:
        train = load_function(self.base_task_id) if isinstance(self.base_task_id, str) else self.base_task_id
        if not any(isinstance(p, ParameterSet) for p in self.hyper_parameters):
            return train
        if self.execution_queue is not None:
            raise PrefectHPOError(
                "ParameterSet with execution_queue: a work pool's workers import the training function itself, "
                "so it must take the set's parameters under parameter_set_<i>; or run the sets locally"
            )
        takes_trial = wants_trial(train)

        def with_sets_spread(config: Config, trial: Any) -> Any:
            return train(flatten(config), trial) if takes_trial else train(flatten(config))

        return with_sets_spread

    @property
    def controller(self) -> SweepController:
        if self._controller is None:
            raise PrefectHPOError("the optimizer has not started; call start() first")
        return self._controller

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the end (timeout in seconds); True if it ended."""
        return self.controller.wait(timeout)

    def stop(self, timeout: float | None = None) -> None:
        self.controller.stop(timeout=timeout)

    def get_top_experiments(self, top_k: int) -> list[TrialRecord]:
        """The best `top_k` completed trials, best first."""
        snapshot = self.controller.snapshot()
        return [] if snapshot is None else snapshot._ranked()[:top_k]

    def get_top_experiments_details(self, top_k: int, all_metrics: bool = False) -> list[dict[str, Any]]:
        return self.controller.top_details(top_k, all_metrics=all_metrics)

    def get_num_active_experiments(self) -> int:
        return len(self.controller.active_trials())

    def get_active_experiments(self) -> list[TrialRecord]:
        return self.controller.active_trials()

    def elapsed(self) -> float:
        """Minutes since the start, as ClearML's."""
        return self.controller.elapsed() / 60.0

    def reached_time_limit(self) -> bool:
        return self.controller.reached_time_limit()

    def set_time_limit(self, in_minutes: float | None = None) -> None:
        self.controller.set_time_limit(None if in_minutes is None else in_minutes * 60.0)
