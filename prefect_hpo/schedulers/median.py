"""The median stopping rule (Golovin et al., 2017, as in Ray Tune and Optuna's MedianPruner)."""

from __future__ import annotations

from dataclasses import dataclass

from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.schedulers.base import Action, Decision, ReportEvent, SchedulerStore, SettingsState, median_stops


@dataclass(frozen=True)
class MedianStoppingScheduler(SettingsState):
    """Stop a trial whose best score so far is worse than the median of the other trials'
    running averages at the same step, once it has run `grace_period` steps and at least
    `min_samples` other trials have reported by then.

    The trial keeps its own best score (it sees every one of its reports) and passes
    it as `event.best`; the others' running averages come from the store.
    """

    grace_period: int = 1
    min_samples: int = 3
    max_t: int | None = None

    def __post_init__(self) -> None:
        if self.grace_period < 0 or self.min_samples < 1:
            raise PrefectHPOError("median scheduler: grace_period must be >= 0 and min_samples >= 1")

    def bracket_for(self, number: int) -> int:
        return 0

    def on_report(self, event: ReportEvent, store: SchedulerStore) -> Decision:
        if event.step < self.grace_period:
            return Decision.go_on()
        others = store.running_averages(event.sweep_id, event.trial_id, event.step)
        if median_stops(event.best, others, self.min_samples):
            return Decision(
                Action.STOP,
                f"median rule at step {event.step}: best {event.best:.6g} is worse than the median of "
                f"{len(others)} other trials' running averages",
            )
        return Decision.go_on()
