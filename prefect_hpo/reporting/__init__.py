"""What a sweep tells people as it runs and after: reporters, artifacts, tables, plots, exports.

The reporters the loop calls: `Reporter` (the protocol), `Reporters` (several as one),
`TrialCallbackReporter` (the user's `on_trial_complete`); `terminal.TerminalReporter`,
`artifacts.ArtifactReporter` and `checkpoints.TopKCheckpoints` are reporters too.
"""

from prefect_hpo.reporting.base import Reporter, Reporters
from prefect_hpo.reporting.callback import TrialCallback, TrialCallbackReporter

__all__ = ["Reporter", "Reporters", "TrialCallback", "TrialCallbackReporter"]
