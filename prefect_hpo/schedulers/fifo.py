"""FIFO: no early stopping; every trial runs until it returns (or hits max_t / max_steps)."""

from __future__ import annotations

from dataclasses import dataclass

from prefect_hpo.schedulers.base import Decision, ReportEvent, SchedulerStore, SettingsState


@dataclass(frozen=True)
class FIFOScheduler(SettingsState):
    max_t: int | None = None

    def bracket_for(self, number: int) -> int:
        return 0

    def on_report(self, event: ReportEvent, store: SchedulerStore) -> Decision:
        return Decision.go_on()
