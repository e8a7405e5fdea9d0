"""Checks of `sweep()`'s plain settings, made before Prefect starts, each error naming the field and the fix.

The parts that own an argument check it themselves (a space, an objective, a budget, a scheduler, a store);
these are the settings no part owns, and the one limit that is Prefect's own: the size of the flow run's
parameters, which its server refuses past 524,288 bytes (a raw HTTP 422, once the flow run is on its way).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol, TypeGuard

from prefect_hpo.errors import PrefectHPOError

#: The largest seed: every Optuna sampler hands it to numpy's RandomState, which takes 0 to 2**32 - 1.
SEED_MAX = 2**32 - 1
WORKER_KINDS = ("processes", "threads")
#: Prefect's setting for its server's limit on a flow run's parameters.
PARAMETER_SIZE_SETTING = "PREFECT_SERVER_API_MAX_PARAMETER_SIZE"


class SerializesParameters(Protocol):
    """A Prefect flow: it turns call arguments into the JSON its flow run carries."""

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]: ...


def is_integer(value: object) -> TypeGuard[int]:
    """An int that is not a bool (Python counts True as 1; no setting of ours means that)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or a float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_seed(seed: object) -> None:
    if seed is not None and not (is_integer(seed) and 0 <= seed <= SEED_MAX):
        raise PrefectHPOError(f"seed must be an integer from 0 to {SEED_MAX} (2**32 - 1) or None, got {seed!r}")


def check_workers(workers: object) -> None:
    if workers not in WORKER_KINDS:
        raise PrefectHPOError(
            f"workers={workers!r} is not one of {', '.join(map(repr, WORKER_KINDS))}: 'processes' runs each trial in "
            "a worker process (CPU-bound training in parallel), 'threads' in a thread of this process"
        )


def check_integer(name: str, value: object, least: int, meaning: str) -> None:
    """Refuse anything but an integer >= `least` for the setting `name` (`meaning`: what it counts)."""
    if not is_integer(value) or value < least:
        raise PrefectHPOError(f"{name} must be an integer >= {least}, got {value!r} ({meaning})")


def check_parameter_size(flow: SerializesParameters, parameters: dict[str, Any], limit: int) -> None:
    """Refuse parameters that Prefect's server would refuse: measured as Prefect measures them (the
    flow's own serialisation, then compact JSON), naming the largest parameter, or the space's parameter.

    `limit`: Prefect's `server.api.max_parameter_size` (0: no limit)."""
    if limit <= 0:
        return
    serialized = flow.serialize_parameters(parameters)
    total = _size(serialized)
    if total <= limit:
        return
    # down the largest member at each level (the options, then their space or spec), to the part to shrink
    path: list[str] = []
    value: Any = serialized
    while isinstance(value, Mapping) and value and (not path or path[-1] != "space"):
        members = {name: _size(member) for name, member in value.items()}
        path.append(max(members, key=lambda name: members[name]))
        value = value[path[-1]]
    field = f"parameter {'.'.join(path)!r} ({_size(value):,} bytes)"
    if path and path[-1] == "space" and isinstance(value, Mapping) and value:
        inner = {name: _size(member) for name, member in value.items()}
        biggest = max(inner, key=lambda name: inner[name])
        field = f"space parameter {biggest!r} ({inner[biggest]:,} bytes as JSON)"
    raise PrefectHPOError(
        f"the {field} makes the sweep's flow-run parameters {total:,} bytes as JSON, over the {limit:,} bytes "
        f"Prefect allows ({PARAMETER_SIZE_SETTING}); keep large values out of the search space: put them in a file "
        "or a dict in the training module and make the choice a short key or a path, which train() looks up"
    )


def _size(value: Any) -> int:
    """Bytes of `value` as compact JSON, as Prefect's server counts them (non-ASCII characters escaped)."""
    return len(json.dumps(value, separators=(",", ":")).encode())
