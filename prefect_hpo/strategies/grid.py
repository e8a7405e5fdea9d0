"""Grid search: every configuration of the space's grid, once each, in a fixed order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prefect_hpo.records import Config, TrialRecord
from prefect_hpo.space import SearchSpace, config_hash
from prefect_hpo.strategies.base import Suggestion


class GridStrategy:
    """Walks `SearchSpace.grid(resolution)` lazily, skipping configurations already told.

    Written here rather than with Optuna's GridSampler because that sampler needs
    the full grid as lists up front and cannot express conditional parameters;
    a lazy walk over our own grid handles both and keeps memory flat.
    """

    def __init__(self, space: SearchSpace, resolution: int = 5) -> None:
        self._grid: Iterator[Config] = space.grid(resolution)
        self._seen: set[str] = set()

    def ask(self) -> Suggestion | None:
        for config in self._grid:
            key = config_hash(config)
            if key not in self._seen:
                self._seen.add(key)
                return Suggestion(config)
        return None

    def tell(self, trial: TrialRecord) -> None:
        self._seen.add(trial.config_hash)

    def state_dict(self) -> dict[str, Any]:
        """The configurations done or proposed (JSON-safe); a loaded grid walks on past them."""
        return {"kind": "grid", "seen": sorted(self._seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "grid":
            raise ValueError(f"not a grid searcher's state (kind {state.get('kind')!r})")
        self._seen = set(state["seen"])
