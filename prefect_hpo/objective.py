"""Objectives: which metric counts, in which direction, last value or best reported value.

`min` / `max` judge a trial by its last value of the metric (the returned one, or
the last reported when the function returns nothing); `min_global` / `max_global`
by the best value it reported at any step, as ClearML's objective signs do.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prefect_hpo.errors import ObjectiveError

Mode = Literal["min", "max", "min_global", "max_global"]
_MODES = ("min", "max", "min_global", "max_global")


@dataclass(frozen=True)
class Objective:
    """One metric to optimise: `Objective("val_loss", "min")`."""

    metric: str
    mode: Mode = "min"

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise ObjectiveError(f"objective metric must be a non-empty string, got {self.metric!r}")
        if self.mode not in _MODES:
            raise ObjectiveError(f"objective {self.metric!r}: mode {self.mode!r} is not one of {list(_MODES)}")

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return "minimize" if self.mode.startswith("min") else "maximize"

    @property
    def uses_best_reported(self) -> bool:
        return self.mode.endswith("_global")

    def better(self, a: float, b: float) -> bool:
        """Whether value `a` is strictly better than `b` in this direction."""
        return a < b if self.direction == "minimize" else a > b

    def sort_key(self, value: float | None) -> float:
        """A key that sorts best first; a missing or NaN value sorts last."""
        if value is None or math.isnan(value):
            return math.inf
        return value if self.direction == "minimize" else -value

    def to_dict(self) -> dict[str, str]:
        return {"metric": self.metric, "mode": self.mode}


def build_objectives(objective: Objective | str | Mapping[str, Any] | Sequence[Any]) -> tuple[Objective, ...]:
    """Normalise what a user passes: an Objective, "metric", "metric:max", a dict, or a list of them."""
    items = objective if isinstance(objective, list | tuple) else [objective]
    if not items:
        raise ObjectiveError("objective: give at least one Objective(metric, mode)")
    out: list[Objective] = []
    for item in items:
        if isinstance(item, Objective):
            out.append(item)
        elif isinstance(item, str):
            metric, _, mode = item.partition(":")
            out.append(Objective(metric, mode or "min"))  # type: ignore[arg-type]
        elif isinstance(item, Mapping):
            try:
                out.append(Objective(item["metric"], item.get("mode", "min")))
            except KeyError:
                raise ObjectiveError(
                    f"objective {dict(item)!r}: a dict needs a 'metric' key, e.g. "
                    "{'metric': 'val_loss', 'mode': 'min'}"
                ) from None
        else:
            raise ObjectiveError(f"objective: cannot use {item!r}; give Objective('metric', 'min')")
    names = [o.metric for o in out]
    if len(set(names)) != len(names):
        raise ObjectiveError(f"objective: metric names repeat in {names}; each may appear once")
    return tuple(out)


def objective_values(
    objectives: Sequence[Objective],
    final: Mapping[str, float],
    history: Mapping[str, Sequence[float]],
) -> tuple[float, ...]:
    """The value of each objective for a finished trial.

    `final` holds the metrics the function returned (or the last reported ones);
    `history` every value reported per metric. Raises ObjectiveError naming a
    metric that the trial never produced.
    """
    values: list[float] = []
    for obj in objectives:
        seen = list(history.get(obj.metric, ()))
        if obj.metric in final:
            seen.append(final[obj.metric])
        if not seen:
            raise ObjectiveError(missing_metric_message(obj, final, history))
        if obj.uses_best_reported:
            finite = [v for v in seen if not math.isnan(v)]
            pick = min if obj.direction == "minimize" else max
            values.append(pick(finite) if finite else math.nan)
        else:
            values.append(final[obj.metric] if obj.metric in final else seen[-1])
    return tuple(values)


def missing_metric_message(
    objective: Objective, final: Mapping[str, float], history: Mapping[str, Sequence[float]]
) -> str:
    """Why a trial has no value for `objective`, with the fix first: most often the objective's metric
    name has a typo, so a close match among the metrics the trial did produce is named."""
    wanted = objective.metric
    produced = sorted(set(final) | set(history))
    if not produced:
        return (
            f"the training function returned None and reported no metrics, but the objective asks for {wanted!r}; "
            f"return a dict with {wanted!r} (or a number), or report it with trial.report(step, {wanted}=...)"
        )
    source = "reported" if set(final) <= set(history) else "returned" if not history else "returned and reported"
    head = f"the training function {source} metrics {produced} but the objective asks for {wanted!r}"
    close = difflib.get_close_matches(wanted, produced, n=1, cutoff=0.6)
    if close:
        return (
            f"{head}; did you mean {close[0]!r}? change objective={_written(objective)!r} to "
            f"objective={_written(Objective(close[0], objective.mode))!r} (or return a dict with {wanted!r})"
        )
    return (
        f"{head}; change the objective to one of the metrics {produced} "
        f"(e.g. objective={_written(Objective(produced[0], objective.mode))!r}), or return a dict with {wanted!r}"
    )


def _written(objective: Objective) -> str:
    """The short string form of an objective, as a user writes it: 'val_loss' or 'acc:max'."""
    return objective.metric if objective.mode == "min" else f"{objective.metric}:{objective.mode}"


def dominates(a: Sequence[float], b: Sequence[float], objectives: Sequence[Objective]) -> bool:
    """Whether `a` is at least as good as `b` everywhere and strictly better somewhere."""
    strictly = False
    for x, y, obj in zip(a, b, objectives, strict=True):
        if obj.better(y, x):
            return False
        if obj.better(x, y):
            strictly = True
    return strictly
