"""Where a sweep's trial checkpoints live under the checkpoint root, as the store recorded it.

A sweep's checkpoints are in a folder of its own, named when the sweep is created and recorded in the
store: `<root>/<cleaned name>-<uid>/trial-N`. The uid (random, per sweep) makes it unique: two sweeps
whose names clean alike ("ckpt a", "ckpt-a"), or one name in two stores, no longer share a folder, so
a fresh trial finds no checkpoint it did not write or inherit, and `keep_top_k` removes only its own.

Releases before this one used `<root>/<cleaned name>/trial-N`, shared by every such sweep. A sweep
from then keeps those folders for the trials it had (the store's migration recorded which, and where),
so that a paused, interrupted or retried trial resumes from its checkpoint; its new trials use its own
folder. The old folders are never removed by `keep_top_k`: another sweep may be using them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The most characters of the name a sweep's folder keeps (names may have 200, forks more; a path
#: component has at most 255 bytes on most file systems).
NAME_CHARS = 60


def sweep_folder(name: str, uid: str) -> str:
    """The folder a new sweep's checkpoints go to under the root: readable, and unique by its uid."""
    readable = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "-" for c in name[:NAME_CHARS])
    return f"{readable}-{uid}"


def legacy_folder(name: str) -> str:
    """The folder releases before per-sweep folders used: the cleaned name, shared by names that clean alike."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


@dataclass(frozen=True)
class CheckpointLayout:
    """A sweep's checkpoint folders: trial N's is `<root>/<folder>/trial-N`, except, for a sweep from
    before per-sweep folders, the trials numbered below `legacy_below`, which stay in `legacy_folder`."""

    root: str
    folder: str
    legacy_folder: str | None = None
    legacy_below: int = 0

    @classmethod
    def of_sweep(cls, root: str, sweep: Mapping[str, Any]) -> CheckpointLayout:
        """The layout the store recorded for a sweep (a row of `hpo_sweeps`), under `root`."""
        return cls(
            root=root.rstrip("/"),
            folder=str(sweep["checkpoint_folder"]),
            legacy_folder=sweep["legacy_checkpoint_folder"],
            legacy_below=int(sweep["legacy_checkpoint_trials"] or 0),
        )

    def is_legacy(self, number: int) -> bool:
        """Whether trial `number` keeps its checkpoint in the folder of a release before per-sweep folders."""
        return self.legacy_folder is not None and number < self.legacy_below

    def path(self, number: int) -> str:
        """Where trial `number` keeps its checkpoint (a local folder or an fsspec URL)."""
        folder = self.legacy_folder if self.is_legacy(number) and self.legacy_folder is not None else self.folder
        return f"{self.root}/{folder}/trial-{number}"
