"""Training functions by import path: how trials on other machines, and deployments, find the user's code."""

from __future__ import annotations

import importlib
import os
import sys

from prefect_hpo.errors import TrialFunctionError
from prefect_hpo.trial import TrainFn


def import_path(train: TrainFn | str) -> str:
    """`module:function` for a training function that workers on other machines can import."""
    if isinstance(train, str):
        return train
    module, name = getattr(train, "__module__", None), getattr(train, "__qualname__", "")
    if not module or module == "__main__" or "<" in name:
        raise TrialFunctionError(
            f"trials on a work pool import the training function by name, but {name or train!r} is defined "
            f"in {module or 'no module'}; move it into an importable module (or pass 'package.module:function')"
        )
    return f"{module}:{name}"


def load_function(path: str) -> TrainFn:
    """`package.module:function` -> the function, importable from the current working folder."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise TrialFunctionError(f"train must be an import path like 'package.module:function', got {path!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise TrialFunctionError(
            f"train {path!r} cannot be imported ({exc}); run from the folder that holds {module_name.split('.')[0]!r} "
            "or install it"
        ) from None
    if not callable(fn):
        raise TrialFunctionError(f"train {path!r} is {type(fn).__name__}, not a function")
    return fn  # type: ignore[no-any-return]
