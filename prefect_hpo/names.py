"""Sweep names: the form a name takes, in a pattern and in words, and the default taken from the training
function. Shared by `sweep()`, `start_sweep()` and `SweepSpec`, which sit above this module."""

from __future__ import annotations

import re
from typing import Any

# what `sweep()` accepts as a name. `(?!\n)` before `$`: Python's `$` (Prefect's server checks the schema with
# `re.search`) also matches before a final newline, and "abc\n" would pass; code checks a name with `re.fullmatch`.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._\-]{0,199}(?!\n)$"
#: What NAME_PATTERN asks for, in words (the fix an error about a sweep name gives).
NAME_RULE = "use letters, digits, spaces, '.', '_' or '-' (at most 200 characters, starting with a letter or digit)"


def default_sweep_name(train: Any) -> str:
    """The training function's name, reduced to the characters a sweep name may hold."""
    raw = getattr(train, "__name__", "") or ""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-._") or "sweep"
