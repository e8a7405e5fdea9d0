"""Storage named by reference (`env:NAME`, `block:NAME`), and what of a storage argument Prefect may see.

Prefect keeps every flow-run parameter in its database and shows it in the UI and through its API,
and a trial store's URL may carry a password. So a sweep never hands Prefect a URL with credentials:

- `storage="env:HPO_DB_URL"` names an environment variable, and `storage="block:hpo-db"` a Prefect
  Secret block whose value is the URL. Only the reference travels through Prefect (flow-run
  parameters, the `SweepSpec`, work-pool trial flow runs); it is resolved where the store is opened:
  in the sweep's process, and by each work-pool trial on its worker.
- A URL given directly is used as it is in the sweep's own process; Prefect is shown it with its
  credentials masked (`user:***@host`). It cannot reach a work pool's workers without passing through
  Prefect, so a work-pool sweep refuses a URL with a password and asks for a reference instead.
"""

from __future__ import annotations

import os

from prefect_hpo.errors import StoreError
from prefect_hpo.store.urls import has_credentials, mask_url, resolve_storage

ENV_PREFIX = "env:"
BLOCK_PREFIX = "block:"


def is_reference(storage: str | None) -> bool:
    """Whether `storage` names its URL by reference (`env:NAME` or `block:NAME`) instead of holding it."""
    return isinstance(storage, str) and storage.startswith((ENV_PREFIX, BLOCK_PREFIX))


def resolve(storage: str | None) -> str:
    """The store's URL for a storage argument, resolved in this process.

    `env:NAME` reads the environment variable NAME, `block:NAME` loads the Prefect Secret block NAME
    (from this process's Prefect API); their value, like any other argument, then goes through
    `resolve_storage`: None is the default SQLite file, a bare path a SQLite file there.

    Raises:
        StoreError: naming the reference, when the variable is unset or empty, or the block is missing
            or holds something other than a URL.
    """
    if storage is None or not is_reference(storage):
        return resolve_storage(storage)
    kind, _, name = storage.partition(":")
    if not name.strip():
        raise StoreError(
            f"storage {storage!r} names no {kind}; write it as 'env:VARIABLE' (an environment variable holding "
            "the URL) or 'block:NAME' (a Prefect Secret block holding it)"
        )
    value = _from_env(storage, name) if storage.startswith(ENV_PREFIX) else _from_block(storage, name)
    if is_reference(value):
        raise StoreError(f"storage {storage!r} holds another reference ({value!r}); it must hold the URL itself")
    return resolve_storage(value)


def _from_env(storage: str, name: str) -> str:
    value = os.environ.get(name, "")
    if not value.strip():
        raise StoreError(
            f"storage {storage!r}: the environment variable {name} is not set in this process (pid {os.getpid()}); "
            f"set it to the store's URL (export {name}=postgresql+psycopg://USER:PASSWORD@HOST/DB) where the sweep "
            "runs and, for a work pool, on each worker (its environment or the pool's `env` job variable)"
        )
    return value


def _from_block(storage: str, name: str) -> str:
    # imported here, not at the top: only a `block:` reference needs Prefect's blocks, and the CLI's
    # read-only commands (`status`, `export`) resolve storage without starting any Prefect machinery
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL

    where = PREFECT_API_URL.value() or "Prefect's temporary local server"
    try:
        block = Secret.load(name, _sync=True)  # type: ignore[call-arg]  # async_dispatch takes _sync: sync in async code too
    except ValueError as exc:  # Prefect's "Unable to find block document named ..."
        raise StoreError(
            f"storage {storage!r}: no Prefect Secret block named {name!r} on {where} ({exc}); create it with "
            f"`Secret(value=URL).save({name!r})` (from prefect.blocks.system import Secret) or in the UI under "
            "Blocks > Secret, on the Prefect server the sweep and its workers use"
        ) from None
    if not isinstance(block, Secret):  # `load` is typed as sync-or-coroutine; `_sync=True` makes it the block
        raise TypeError(f"Secret.load returned {type(block).__name__}")
    value = block.get()
    if not isinstance(value, str) or not value.strip():
        raise StoreError(
            f"storage {storage!r}: the Secret block {name!r} holds a {type(value).__name__}, not a URL; "
            "save the store's URL as its value: "
            f"Secret(value='postgresql+psycopg://...').save({name!r}, overwrite=True)"
        )
    return value


def shown(storage: str | None, url: str) -> str:
    """What of a storage argument may go into Prefect (flow-run parameters, specs, logs): the reference
    itself, or `url` (what `storage` resolved to) with any credentials masked."""
    if storage is not None and is_reference(storage):
        return storage
    return mask_url(url)


def refuse_credentials_for_workers(storage: str | None) -> None:
    """Refuse a storage URL with a password for trials on a work pool: the workers learn their storage
    from the trial flow run's parameters, which Prefect stores and shows.

    Raises:
        StoreError: naming the (masked) URL and the two ways to name it by reference.
    """
    if storage is not None and not is_reference(storage) and has_credentials(storage):
        raise StoreError(
            f"storage {mask_url(storage)!r} carries a password, and a work-pool trial would receive it as a "
            "flow-run parameter that Prefect stores and shows; name the store by reference instead: "
            "storage='env:HPO_DB_URL' (an environment variable set where the sweep runs and on each worker) "
            "or storage='block:hpo-db' (a Prefect Secret block: Secret(value=URL).save('hpo-db'))"
        )
