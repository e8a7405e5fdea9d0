"""Grid search: every configuration of the space's grid, once each, in a fixed order."""

from __future__ import annotations

from collections.abc import Iterator

from prefect_hpo.records import Config, TrialRecord
from prefect_hpo.space import SearchSpace, config_hash


class GridStrategy:
    """Walks `SearchSpace.grid(resolution)` lazily, skipping configurations already told.

    Written here rather than with Optuna's GridSampler because that sampler needs
    the full grid as lists up front and cannot express conditional parameters;
    a lazy walk over our own grid handles both and keeps memory flat.
    """

    def __init__(self, space: SearchSpace, resolution: int = 5) -> None:
        self._grid: Iterator[Config] = space.grid(resolution)
        self._seen: set[str] = set()

    def ask(self) -> Config | None:
        for config in self._grid:
            key = config_hash(config)
            if key not in self._seen:
                self._seen.add(key)
                return config
        return None

    def tell(self, trial: TrialRecord) -> None:
        self._seen.add(trial.config_hash)
