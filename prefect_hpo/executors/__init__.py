"""Executors: where and how trials run.

Settings say where (`settings.py`: `WorkPoolExecutor`, `ClusterExecutor`, what a user passes as
`sweep(executor=...)`); executors run one sweep's trials there (`local.LocalTrials`,
`workpool.WorkPoolTrials`, `cluster.ClusterTrials`), each trial's job in the one Prefect task of
`jobs.py`. Only the interface is imported here: trial worker processes import
`prefect_hpo.executors.runners` and must not pay for importing Prefect.
"""

from prefect_hpo.executors.base import Executor, TrialHandle

__all__ = ["Executor", "TrialHandle"]
