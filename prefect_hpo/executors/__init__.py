"""Executors: where and how trials run.

Only the interface is imported here: trial worker processes import
`prefect_hpo.executors.runners` and must not pay for importing Prefect.
The local executor lives in `prefect_hpo.executors.local`.
"""

from prefect_hpo.executors.base import Executor, TrialHandle

__all__ = ["Executor", "TrialHandle"]
