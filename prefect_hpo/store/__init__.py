"""The trial store: the single source of truth for sweeps, trials and reports."""

from prefect_hpo.store.sql import SqlTrialStore
from prefect_hpo.store.urls import default_storage_url, mask_url, resolve_storage

__all__ = ["SqlTrialStore", "default_storage_url", "mask_url", "resolve_storage"]
