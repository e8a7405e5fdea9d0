"""What a training function returned, read as the trial's final metrics: a number or a dict of numbers.

Every way a result can be wrong is the trial's ObjectiveError with the value quoted and the fix named
(a string of a number, None, a tensor, an int too large for a float), never an error of ours.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from prefect_hpo.errors import ObjectiveError
from prefect_hpo.objective import Objective

#: Why a number fails as a result or a report: Python's float holds up to about 1.8e308.
TOO_LARGE = "too large for a float (the largest is about 1.8e308); return or report a float"


def _as_float(value: numbers.Real, what: str) -> float:
    """`value` as a float; one too large for a float (`10**400`) is the trial's ObjectiveError, not ours."""
    try:
        return float(value)
    except OverflowError:
        raise ObjectiveError(f"the training function returned {what}{shown_number(value)}, {TOO_LARGE}") from None


def result_metrics(result: Any, objectives: tuple[Objective, ...]) -> dict[str, float]:
    """The metrics a training function returned: a bare number or a dict of numbers."""
    metrics = [o.metric for o in objectives]
    if isinstance(result, numbers.Real) and not isinstance(result, bool):
        if len(objectives) > 1:
            raise ObjectiveError(
                f"the training function returned a bare number, but there are {len(objectives)} objectives; "
                f"return a dict with {metrics}"
            )
        return {objectives[0].metric: _as_float(result, "")}
    if isinstance(result, Mapping):
        out: dict[str, float] = {}
        for key, value in result.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ObjectiveError(
                    f"the training function returned {key!r}: {_shown(value)} (type {type(value).__name__}), "
                    f"not a number; put only numbers in the result dict ({_conversion(value)})"
                )
            out[str(key)] = _as_float(value, f"{key!r}: ")
        return out
    example = f"{{{metrics[0]!r}: 0.25}} or 0.25" if len(metrics) == 1 else f"a dict with {metrics}"
    raise ObjectiveError(
        f"the training function returned {_shown(result)} (type {type(result).__name__}), not a number or a dict of "
        f"numbers; return {example} ({_conversion(result)})"
    )


def _shown(value: Any) -> str:
    """A returned value as an error quotes it: its repr, cut short."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's limit on digits written out (sys.set_int_max_str_digits)
        return _int_length(value) if isinstance(value, int) else f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def shown_number(value: Any) -> str:
    """A number too large for a float as an error names it: an int by its length, anything else by `_shown`."""
    return _int_length(value) if isinstance(value, int) else _shown(value)


def _int_length(value: int) -> str:
    """A long int as a person reads it: "an int of 401 digits" (or "a negative int of ...")."""
    return f"{'a negative' if value < 0 else 'an'} int of {_digits(value)} digits"


def _digits(number: int) -> int:
    """How many decimal digits `number` has, without writing it out (which Python refuses past 4,300)."""
    guess = int(abs(number).bit_length() * math.log10(2))  # the count, or one less
    return guess + 1 if abs(number) >= 10**guess else guess


def _conversion(value: Any) -> str:
    """How to turn a returned value into a number, by what it is."""
    if isinstance(value, str):
        return "the number, not a string of it: float(text)"
    if value is None:
        return "is a return statement missing?"
    return "for a tensor or a one-value array: value.item()"
