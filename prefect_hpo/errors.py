"""The exceptions prefect_hpo raises: one small hierarchy, each message naming the field and the fix."""

from __future__ import annotations


class PrefectHPOError(Exception):
    """Base class of every error prefect_hpo raises on purpose."""


class SearchSpaceError(PrefectHPOError, ValueError):
    """A search space (or a configuration drawn from it) is invalid."""


class ObjectiveError(PrefectHPOError, ValueError):
    """An objective is misdeclared, or a trial's result does not carry it."""


class BudgetError(PrefectHPOError, ValueError):
    """A budget limit is invalid."""


class StrategyError(PrefectHPOError, ValueError):
    """A strategy name or object cannot be used with this space or objective."""


class StoreError(PrefectHPOError):
    """The trial store cannot be opened, or refuses an operation."""


class SweepConflictError(StoreError):
    """A sweep with this name exists with a different search space or objective."""


class SweepBusyError(StoreError):
    """Another live parent process is running this sweep; two drivers of one sweep are refused."""


class ServerStartError(PrefectHPOError):
    """Prefect's temporary server did not come up in time; says which setting gives it longer."""


class TrialFunctionError(PrefectHPOError, TypeError):
    """The training function has a signature prefect_hpo cannot call."""


class TooManyFailedTrials(PrefectHPOError):
    """More trials failed than `Budget.max_failed_trials` allows; the sweep stopped."""


class TrialsFailAlike(TooManyFailedTrials):
    """The first `Budget.fail_fast` trials of a run all failed with the same error (a typo in the
    objective's metric, a training function that returns a string, a missing file): the sweep stopped
    early instead of spending its budget on the same mistake. The message quotes the error."""


class TrialStopped(PrefectHPOError):
    """Raised inside a running trial when it must stop (budget, time limit, scheduler).

    The training function does not need to catch it: the trial runner does, and
    records the trial with the reason carried here.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TrialPaused(TrialStopped):
    """Raised inside a running trial that pauses at a rung (promotion-form ASHA); it may resume later
    from its checkpoint. Like TrialStopped, the training function need not catch it."""
