"""`SweepOptions`: one sweep's settings, validated once, as `sweep()` builds them and the flow and the loop read them.

`sweep()` turns its arguments into one `SweepOptions`; the sweep flow takes it as its one settings parameter, and
the loop reads it from its `LoopSettings`: no layer restates the list. Each field is checked when the object is
made (the plain settings), and `check()` checks what needs the parts below (the strategy and the scheduler can be
built together, the budget suits them, the store opens and takes writes), each error naming the field and the fix.

It is a pydantic model for one reason: Prefect stores a flow's parameters as JSON, and a model decides its own
JSON (`parameters()`): the plain data a person reads in the UI (the space, the objective, the budget, the strategy's
name), never the objects themselves. Pydantic validates none of the fields (`SkipValidation`): our own checks do,
with our own errors. The options know no Prefect (the executor settings are opaque here; `sweep()` checks them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import optuna
from pydantic import BaseModel, ConfigDict, SkipValidation, model_serializer

from prefect_hpo.arguments import check_integer, check_seed, check_workers, is_integer, is_number
from prefect_hpo.budget import Budget
from prefect_hpo.errors import PrefectHPOError, StrategyError
from prefect_hpo.names import NAME_PATTERN, NAME_RULE, default_sweep_name
from prefect_hpo.objective import Objective, build_objectives
from prefect_hpo.records import Config, Constraint
from prefect_hpo.reporting.callback import TrialCallback
from prefect_hpo.resources import (
    Inventory,
    ResourceRequest,
    ResourcesOption,
    build_inventory,
    never_fits,
    parse_request,
)
from prefect_hpo.schedulers import FIFOScheduler, RungScheduler, Scheduler, build_scheduler
from prefect_hpo.space import SearchSpace
from prefect_hpo.store import SqlTrialStore
from prefect_hpo.store.urls import default_home, has_credentials, mask_url
from prefect_hpo.strategies import PBTStrategy, Strategy, build_strategy, pbt_scheduler_alias, strategy_name
from prefect_hpo.trial import TrainFn, wants_trial

_NAME = re.compile(NAME_PATTERN)
WorkerKind = Literal["processes", "threads"]
StrategyOption = str | Mapping[str, Any] | optuna.samplers.BaseSampler | Strategy
SchedulerOption = str | Mapping[str, Any] | Scheduler | None


class SweepOptions(BaseModel):
    """One sweep's settings (see `sweep()` for each): frozen, and checked field by field when made.

    `storage` is the store as Prefect may show it: a reference ("env:NAME", "block:NAME"), a URL with any
    password masked, or None for the default; the URL itself never sits in the options (the flow is given it
    as a secret of its own)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    train: SkipValidation[TrainFn]
    space: SkipValidation[SearchSpace]
    objectives: SkipValidation[tuple[Objective, ...]]
    name: SkipValidation[str]
    strategy: SkipValidation[StrategyOption] = "tpe"
    budget: SkipValidation[Budget] = Budget()
    storage: SkipValidation[str | None] = None
    seed: SkipValidation[int | None] = None
    scheduler: SkipValidation[SchedulerOption] = None
    checkpoints: SkipValidation[str | None] = None
    workers: SkipValidation[WorkerKind] = "processes"
    grid_resolution: SkipValidation[int] = 5
    max_consecutive_duplicates: SkipValidation[int] = 20
    show_progress: SkipValidation[bool | None] = None
    #: a work-pool or cluster executor's settings (prefect_hpo.executors), or None for this machine
    executor: SkipValidation[object | None] = None
    max_retries: SkipValidation[int] = 2
    artifact_interval: SkipValidation[float | None] = 5.0
    on_trial_complete: SkipValidation[TrialCallback | None] = None
    stop_check: SkipValidation[Callable[[], str | None] | None] = None
    spec: SkipValidation[dict[str, Any] | None] = None
    fork: SkipValidation[bool] = False
    constraint: SkipValidation[Constraint | None] = None
    max_rejections_in_a_row: SkipValidation[int] = 20
    keep_top_k: SkipValidation[int | None] = None
    #: what each trial needs ({"gpu": 1, "cpu": 2}), or a function of its configuration that says it
    resources: SkipValidation[ResourcesOption | None] = None
    #: this machine's GPUs: "auto" (found), None (none), or their ids
    devices: SkipValidation[Sequence[str | int] | str | None] = "auto"
    #: this machine's cores ("cpu") and custom resources by name, where they differ from what is found
    capacity: SkipValidation[Mapping[str, float] | None] = None

    def __init__(self, **fields: Any) -> None:
        """Make the options and check each field (our errors, not pydantic's: pydantic validates nothing here)."""
        super().__init__(**fields)
        _check_fields(self)

    @classmethod
    def build(
        cls,
        train: TrainFn,
        space: SearchSpace | Mapping[str, Any] | str,
        objective: Objective | str | Mapping[str, Any] | Any = "loss",
        budget: Budget | None = None,
        name: str | None = None,
        storage: str | None = None,
        spec: Mapping[str, Any] | None = None,
        checkpoints: str | None = None,
        **settings: Any,
    ) -> SweepOptions:
        """The options from `sweep()`'s arguments: each given form read (a space's dict or YAML, "metric:mode",
        the default budget, name and checkpoint folder), a password in `storage` or `spec` masked."""
        wants_trial(train)
        return cls(
            train=train,
            space=SearchSpace.build(space),
            objectives=build_objectives(objective),
            budget=budget if budget is not None else Budget(),
            name=name if name is not None else default_sweep_name(train),
            storage=_masked(storage),
            spec=_without_credentials(spec),
            checkpoints=checkpoints or str(default_home() / "checkpoints"),
            **settings,
        )

    def check(self, url: str) -> None:
        """Check what needs the parts: the strategy and the scheduler are built (and dropped), the budget suits
        them, a fixed resource request fits this machine (trials that run here), and the store at `url`
        (`storage` resolved: a Secret block needs Prefect, so the caller does it) opens and takes writes."""
        _, searcher = self.search()
        check_pbt_budget(searcher, self.budget)
        if self.executor is None and not callable(self.resources):
            why = never_fits(self.requested({}), self.inventory())
            if why is not None:
                raise PrefectHPOError(why)
        store = SqlTrialStore(url)  # an unreachable, invalid or read-only store fails here, before Prefect starts
        try:
            store.check_writable()
        finally:
            store.close()

    def search(self, stored_trials: int = 0) -> tuple[Scheduler, Strategy]:
        """The scheduler and the strategy these options name (`stored_trials`: trials the sweep already has)."""
        return build_search(
            self.strategy, self.scheduler, self.space, self.objectives, self.seed, self.grid_resolution, stored_trials
        )

    def requested(self, config: Config) -> ResourceRequest:
        """What a trial with `config` asks for; a function's answer is checked as a mapping would be."""
        if callable(self.resources):
            return parse_request(self.resources(config), where=f"resources({config!r})")
        return parse_request(self.resources)

    def inventory(self) -> Inventory:
        """What this machine lends the trials: `devices` found or given, `capacity` or the cores found."""
        return build_inventory(self.devices, self.capacity)

    def fresh_processes(self, inventory: Inventory | None = None) -> bool:
        """Whether each trial needs a worker process of its own: its trials may hold GPUs on this machine
        (`inventory`: this machine's, where the caller has it; found otherwise)."""
        if self.executor is not None or self.workers != "processes" or self.resources is None:
            return False
        if not callable(self.resources) and self.requested({}).gpu == 0:
            return False
        return bool((inventory or self.inventory()).devices)

    @model_serializer
    def parameters(self) -> dict[str, Any]:
        """The options as plain data: what Prefect stores as the flow run's parameter, and shows."""
        return {
            "train": _named(self.train),
            "name": self.name,
            "space": self.space.to_dict(),
            "objective": [o.to_dict() for o in self.objectives],
            "strategy": self.strategy if isinstance(self.strategy, str | Mapping) else strategy_name(self.strategy),
            "budget": self.budget.to_dict(),
            "storage": self.storage,
            "scheduler": self.scheduler if isinstance(self.scheduler, str | Mapping | None) else _named(self.scheduler),
            "checkpoints": self.checkpoints,
            "seed": self.seed,
            "workers": self.workers,
            "grid_resolution": self.grid_resolution,
            "max_consecutive_duplicates": self.max_consecutive_duplicates,
            "show_progress": self.show_progress,
            "executor": None if self.executor is None else repr(self.executor),
            "max_retries": self.max_retries,
            "artifact_interval": self.artifact_interval,
            "on_trial_complete": _named(self.on_trial_complete),
            "stop_check": _named(self.stop_check),
            "spec": self.spec,
            "fork": self.fork,
            "constraint": _named(self.constraint),
            "max_rejections_in_a_row": self.max_rejections_in_a_row,
            "keep_top_k": self.keep_top_k,
            "resources": _named(self.resources) if callable(self.resources) else _plain(self.resources),
            "devices": self.devices if isinstance(self.devices, str | None) else [str(d) for d in self.devices],
            "capacity": _plain(self.capacity),
        }


def _check_fields(options: SweepOptions) -> None:
    """Each plain setting, in the order `sweep()` documents them; the first bad one raises."""
    if not isinstance(options.budget, Budget):
        raise PrefectHPOError(f"budget must be a Budget(...), got {options.budget!r}")
    if not isinstance(options.name, str) or not _NAME.fullmatch(options.name):
        raise PrefectHPOError(f"sweep name {options.name!r} is not usable; {NAME_RULE}")
    check_seed(options.seed)
    check_workers(options.workers)
    check_integer("grid_resolution", options.grid_resolution, 2, "points per continuous range for the grid strategy")
    check_integer(
        "max_consecutive_duplicates",
        options.max_consecutive_duplicates,
        1,
        "repeated proposals in a row before the space counts as exhausted",
    )
    interval = options.artifact_interval
    if interval is not None and not (is_number(interval) and interval >= 0):
        raise PrefectHPOError(
            f"artifact_interval must be a number of seconds >= 0 (or None for no artifacts), got {interval!r}"
        )
    if not (is_integer(options.max_retries) and options.max_retries >= 0):
        raise PrefectHPOError(f"max_retries must be a non-negative integer, got {options.max_retries!r}")
    if options.keep_top_k is not None and not (is_integer(options.keep_top_k) and options.keep_top_k >= 1):
        raise PrefectHPOError(
            f"keep_top_k must be a positive integer (or None to keep every checkpoint), got {options.keep_top_k!r}"
        )
    if options.constraint is not None and not callable(options.constraint):
        raise PrefectHPOError(f"constraint must be a callable taking a configuration, got {options.constraint!r}")
    rejections = options.max_rejections_in_a_row
    if not (is_integer(rejections) and rejections >= 1):
        raise PrefectHPOError(f"max_rejections_in_a_row must be a positive integer, got {rejections!r}")
    if options.on_trial_complete is not None and not callable(options.on_trial_complete):
        raise PrefectHPOError(f"on_trial_complete must be a callable, got {options.on_trial_complete!r}")
    if not callable(options.resources):
        parse_request(options.resources)
    # the devices and capacity as given, checked (not kept: "auto" looks for GPUs when the sweep starts)
    build_inventory(None if options.devices == "auto" else options.devices, options.capacity)


def build_search(
    strategy: Any,
    scheduler: Any,
    space: SearchSpace,
    objectives: tuple[Objective, ...],
    seed: int | None,
    grid_resolution: int,
    stored_trials: int = 0,
) -> tuple[Scheduler, Strategy]:
    """The scheduler, and the strategy, which sees the scheduler's rungs ("bohb" learns from them).

    `stored_trials` is how many trials the sweep already has (a continued sweep). Population-based
    training ("pbt") is a strategy that plans the population's generations, under no early stopping;
    `scheduler="pbt"`, its first spelling, stands for `strategy="pbt"` (with a DeprecationWarning)."""
    pbt = pbt_scheduler_alias(scheduler)
    if pbt is not None:
        strategy, scheduler = pbt, None
    stopper = build_scheduler(scheduler, seed=seed)
    searcher = build_strategy(
        strategy,
        space,
        objectives,
        seed=seed,
        grid_resolution=grid_resolution,
        rung_levels=stopper.levels if isinstance(stopper, RungScheduler) else (),
        stored_trials=stored_trials,
    )
    if isinstance(searcher, PBTStrategy) and not (isinstance(stopper, FIFOScheduler) and stopper.max_t is None):
        raise StrategyError(
            f"strategy 'pbt' runs each member for whole intervals and ranks them itself, so it takes no "
            f"scheduler (got {scheduler!r}); leave scheduler unset"
        )
    return stopper, searcher


def check_pbt_budget(searcher: Strategy, budget: Budget) -> None:
    """Population-based training needs a trial per member per generation; a smaller max_trials would cut
    a generation short."""
    if isinstance(searcher, PBTStrategy) and budget.max_trials is not None:
        needed = searcher.population * searcher.generations
        if budget.max_trials < needed:
            raise PrefectHPOError(
                f"budget.max_trials={budget.max_trials} is below what pbt needs: population x generations = "
                f"{searcher.population} x {searcher.generations} = {needed}; set max_trials={needed}"
            )


def _masked(storage: object) -> Any:
    """A storage value as Prefect may carry it: a URL's password masked; references and the rest as given."""
    return mask_url(storage) if isinstance(storage, str) and has_credentials(storage) else storage


def _without_credentials(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The spec as the flow run may carry it: a `storage` URL with a password masked (a SweepSpec refuses
    one already; a hand-made spec dict may hold one). References and other URLs stay as they are."""
    if spec is None:
        return None
    out = dict(spec)
    if "storage" in out:
        out["storage"] = _masked(out["storage"])
    return out


def _plain(mapping: Mapping[str, float] | None) -> dict[str, float] | None:
    return None if mapping is None else dict(mapping)


def _named(value: object) -> str | None:
    """A function or object as a person reads it in a flow run's parameters."""
    if value is None:
        return None
    return f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', type(value).__qualname__)}"


__all__ = ["SweepOptions", "WorkerKind", "build_search", "check_pbt_budget"]
