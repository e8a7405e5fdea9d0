"""`sweep()` refuses bad input before Prefect starts: with `validate_only=True`, and in a real call, before
any flow run exists (no server is started, nothing is stored), each error naming the field and the fix."""

from __future__ import annotations

import re
from typing import Any

import pytest

from prefect_hpo import Budget, Categorical, Fixed, Float, sweep
from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.store import SqlTrialStore

BAD_ARGUMENTS = [
    ("workers", {"workers": "fibers"}, "workers='fibers' is not one of 'processes', 'threads'"),
    ("grid_resolution", {"grid_resolution": 0}, "grid_resolution must be an integer >= 2, got 0"),
    ("grid_resolution", {"grid_resolution": 2.5}, "grid_resolution must be an integer >= 2, got 2.5"),
    (
        "max_consecutive_duplicates",
        {"max_consecutive_duplicates": -1},
        "max_consecutive_duplicates must be an integer >= 1, got -1",
    ),
    ("seed", {"seed": "abc"}, r"seed must be an integer from 0 to 4294967295 \(2\*\*32 - 1\) or None, got 'abc'"),
    ("seed", {"seed": -1}, r"seed must be an integer from 0 to 4294967295 \(2\*\*32 - 1\) or None, got -1"),
    ("seed", {"seed": 2**32}, "got 4294967296"),
    ("seed", {"seed": True}, "got True"),
    ("name", {"name": "abc\n"}, r"sweep name 'abc\\n' is not usable; use letters, digits"),
    (
        "space",
        {"space": {"x": Float(0, 1), "data": Categorical(["a" * 1_048_576, "b"])}},
        r"space parameter 'data'.*over the 524,288 bytes Prefect allows.*PREFECT_SERVER_API_MAX_PARAMETER_SIZE",
    ),
    (
        "space",
        {"space": {"x": Float(0, 1), "data": Fixed("é" * 100_000)}},  # JSON writes it \u00e9: 6 bytes a character
        r"space parameter 'data'.*over the 524,288 bytes Prefect allows",
    ),
]


def quadratic(config: dict[str, Any]) -> float:
    return (config["x"] - 0.3) ** 2


@pytest.mark.parametrize(
    ("field", "change", "message"), BAD_ARGUMENTS, ids=[f"{i}-{f}" for i, (f, *_) in enumerate(BAD_ARGUMENTS)]
)
def test_a_bad_argument_is_refused_before_prefect_starts(
    field: str, change: dict[str, Any], message: str, sqlite_url: str
) -> None:
    arguments = {"space": {"x": Float(0, 1)}, "name": "refused", **change}
    for validate_only in (True, False):
        with pytest.raises(PrefectHPOError) as refused:
            sweep(
                quadratic,
                storage=sqlite_url,
                budget=Budget(max_trials=1),
                validate_only=validate_only,
                **arguments,
            )
        assert re.search(message, str(refused.value)), str(refused.value)
    assert SqlTrialStore(sqlite_url).sweep_names() == []


def test_a_space_just_under_prefect_s_limit_is_accepted(sqlite_url: str) -> None:
    """The size counts what the flow call sends; a space well inside the limit is not refused."""
    space = {"x": Float(0, 1), "data": Categorical(["a" * 200_000, "b"])}
    assert sweep(quadratic, space, storage=sqlite_url, validate_only=True) is None
