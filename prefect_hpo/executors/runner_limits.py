"""A trial runner's settings: what the parent passes each runner flow run (`WorkPoolExecutor(runners=N)`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunnerLimits:
    """A runner's settings, as the parent passes them (the `runner` parameter of the trial flow)."""

    queue: str
    idle_timeout: float = 60.0
    max_trials: int | None = None
    max_seconds: float | None = None
    trial_time_limit: float | None = None
    heartbeat_interval: float = 2.0

    def to_parameters(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any]) -> RunnerLimits:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})
