"""Schedulers: early stopping decided inside each trial, from the trial store."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.schedulers.asha import ASHAScheduler, AsyncHyperbandScheduler, HyperbandScheduler
from prefect_hpo.schedulers.base import (
    Action,
    ClockedScheduler,
    Decision,
    PromotingScheduler,
    PromotionStore,
    ReportEvent,
    RungScheduler,
    Scheduler,
    SchedulerStore,
    scheduler_clock,
)
from prefect_hpo.schedulers.fifo import FIFOScheduler
from prefect_hpo.schedulers.median import MedianStoppingScheduler

__all__ = [
    "ASHAScheduler",
    "Action",
    "AsyncHyperbandScheduler",
    "ClockedScheduler",
    "Decision",
    "FIFOScheduler",
    "HyperbandScheduler",
    "MedianStoppingScheduler",
    "PromotingScheduler",
    "PromotionStore",
    "ReportEvent",
    "RungScheduler",
    "Scheduler",
    "SchedulerStore",
    "scheduler_clock",
    "SCHEDULER_NAMES",
    "build_scheduler",
    "scheduler_from_dict",
    "scheduler_to_dict",
]

_BUILDERS: dict[str, Callable[..., Scheduler]] = {
    "fifo": FIFOScheduler,
    "median": MedianStoppingScheduler,
    "asha": ASHAScheduler,
    "hyperband": HyperbandScheduler,
}
SCHEDULER_NAMES = tuple(_BUILDERS)


_CLASSES: dict[str, type[FIFOScheduler | MedianStoppingScheduler | AsyncHyperbandScheduler]] = {
    "fifo": FIFOScheduler,
    "median": MedianStoppingScheduler,
    "async_hyperband": AsyncHyperbandScheduler,
}


def scheduler_to_dict(scheduler: Scheduler | None) -> dict[str, Any] | None:
    """A built-in scheduler as plain data (what a trial flow's parameters carry)."""
    if scheduler is None:
        return None
    for kind, cls in _CLASSES.items():
        if type(scheduler) is cls:
            fields = {f.name: getattr(scheduler, f.name) for f in dataclasses.fields(cls) if f.init}
            if "rung_levels" in fields and fields["rung_levels"] is not None:
                fields["rung_levels"] = list(fields["rung_levels"])
            return {"class": kind, **fields}
    raise PrefectHPOError(
        f"scheduler {type(scheduler).__name__} cannot travel to a work pool as plain data; "
        "use fifo, median, asha or hyperband there"
    )


def scheduler_from_dict(data: Mapping[str, Any] | None) -> Scheduler | None:
    """The inverse of `scheduler_to_dict`."""
    if data is None:
        return None
    fields = dict(data)
    cls = _CLASSES[fields.pop("class")]
    if fields.get("rung_levels") is not None:
        fields["rung_levels"] = tuple(fields["rung_levels"])
    return cls(**fields)


def build_scheduler(scheduler: str | Mapping[str, Any] | Scheduler | None, seed: int | None = None) -> Scheduler:
    """A scheduler from a name ("asha"), a dict ({"type": "asha", "max_t": 27, ...}) or an object."""
    if scheduler is None:
        return FIFOScheduler()
    if isinstance(scheduler, str | Mapping):
        options: dict[str, Any] = {"type": scheduler} if isinstance(scheduler, str) else dict(scheduler)
        kind = str(options.pop("type", "")).lower()
        if kind not in _BUILDERS:
            raise PrefectHPOError(
                f"scheduler {kind!r} is unknown; use one of {list(SCHEDULER_NAMES)} or a scheduler object"
            )
        if kind == "hyperband" and seed is not None:
            options.setdefault("seed", seed)
        if "rung_levels" in options and options["rung_levels"] is not None:
            options["rung_levels"] = tuple(options["rung_levels"])
        try:
            return _BUILDERS[kind](**options)
        except TypeError as exc:
            raise PrefectHPOError(f"scheduler {kind!r}: {exc}") from None
    if isinstance(scheduler, Scheduler):
        return scheduler
    raise PrefectHPOError(
        f"scheduler {scheduler!r} is neither a name ({list(SCHEDULER_NAMES)}), a dict with 'type', "
        "nor an object with bracket_for(number) and on_report(event, store)"
    )
