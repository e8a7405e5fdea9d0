"""Reporters heard as one: each hears every event, in the order given."""

from __future__ import annotations

from prefect_hpo.budget import Budget, BudgetStatus, Usage
from prefect_hpo.records import TrialRecord, TrialState
from prefect_hpo.reporting import Reporter, Reporters

STATUS = BudgetStatus(Budget(max_trials=2), Usage(1, 1, 0, 0, 1.0, 1.0))


class _Heard:
    """A reporter that writes down what it hears, under its name, in one shared list."""

    def __init__(self, name: str, heard: list[str]) -> None:
        self.name, self.heard = name, heard

    def trial_started(self, trial: TrialRecord) -> None:
        self.heard.append(f"{self.name} started {trial.number}")

    def trial_ended(self, trial: TrialRecord, status: BudgetStatus) -> None:
        self.heard.append(f"{self.name} ended {trial.number} ({status.left_trials} left)")

    def sweep_ended(self, status: BudgetStatus, reason: str) -> None:
        self.heard.append(f"{self.name} sweep ended: {reason}")


class TestReporters:
    def test_each_reporter_hears_each_event_in_the_order_given(self) -> None:
        heard: list[str] = []
        trial = TrialRecord(id=1, sweep_id=1, number=7, config={}, config_hash="h", state=TrialState.COMPLETE)
        inner: Reporter = Reporters(_Heard("terminal", heard), _Heard("artifacts", heard))
        chain: Reporter = Reporters(inner, _Heard("callback", heard))  # as the sweep flow chains them
        chain.trial_started(trial)
        chain.trial_ended(trial, STATUS)
        chain.sweep_ended(STATUS, "max_trials=2 reached")
        assert heard == [
            "terminal started 7",
            "artifacts started 7",
            "callback started 7",
            "terminal ended 7 (1 left)",
            "artifacts ended 7 (1 left)",
            "callback ended 7 (1 left)",
            "terminal sweep ended: max_trials=2 reached",
            "artifacts sweep ended: max_trials=2 reached",
            "callback sweep ended: max_trials=2 reached",
        ]
