"""How the training function reaches the worker processes: by value, or by its name in the user's script.

By value (cloudpickle) first: it needs nothing on the worker's side, and a function of the script takes
along the globals it uses as they are in the parent, those set inside `if __name__ == "__main__":` too.
A function whose globals cannot be pickled (a module-level cache the parent filled with a database
handle, a lock, a benchmark problem) goes by name instead: the fork server has loaded the script up to
its sweep (`main_script`), so the worker finds the function there, with the script's globals as that
load made them (a cache starts empty and each worker fills its own).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import cloudpickle

from prefect_hpo.errors import TrialFunctionError
from prefect_hpo.executors.main_script import load_error, parent_main
from prefect_hpo.trial import TrainFn


@dataclass(frozen=True)
class _InMainScript:
    """A training function sent by its qualified name in the script's main module."""

    qualname: str
    why_not_by_value: str


def pack(train: TrainFn) -> bytes:
    """The training function as the worker processes receive it."""
    payload: bytes
    try:
        payload = cloudpickle.dumps(train)
        return payload
    except Exception as exc:  # noqa: BLE001 - pickling raises many types; all mean the same here
        by_value_error = str(exc)
    qualname = getattr(train, "__qualname__", "")
    main = sys.modules.get("__main__")
    if getattr(train, "__module__", None) == "__main__" and _lookup(main, qualname) is train and parent_main():
        payload = cloudpickle.dumps(_InMainScript(qualname, by_value_error))
        return payload
    raise TrialFunctionError(
        f"the training function cannot be sent to worker processes ({by_value_error}); use workers='threads', "
        "or create the objects it cannot send inside the function (or in a module it imports)"
    )


def unpack(payload: bytes) -> TrainFn:
    """In a worker: the training function `pack` sent. One the worker cannot find comes back as a function
    that raises why, so that each trial fails with that message (and the sweep stops on failures alike)
    rather than every worker dying at its start, which breaks the pool with no word of the cause."""
    sent = cloudpickle.loads(payload)
    if not isinstance(sent, _InMainScript):
        return sent  # type: ignore[no-any-return]
    found = _lookup(sys.modules.get("__main__"), sent.qualname)
    if callable(found):
        return found  # type: ignore[no-any-return]
    stopped = load_error()
    missing = f"stopped with {stopped}" if stopped else "does not define it (inside `if __name__ == '__main__':`?)"
    error = TrialFunctionError(
        f"the training function {sent.qualname!r} cannot be sent to worker processes by value "
        f"({sent.why_not_by_value}), and the script, run in the worker up to its sweep, {missing}; "
        "define it at the script's top level, or use workers='threads'"
    )

    def unavailable(*args: object, **kwargs: object) -> None:
        raise error

    return unavailable


def _lookup(module: object, qualname: str) -> object:
    """`module.a.b` for qualname 'a.b'; None where any part is missing (a function inside a function)."""
    found = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found
