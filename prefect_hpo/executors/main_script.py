"""The user's script in the fork server: loaded once, without running the sweep at its top level.

multiprocessing's own way to give worker processes the parent's `__main__` is to run the script again in
each of them, as `__mp_main__` (`multiprocessing.spawn.prepare`). A script that calls `sweep()` at its top
level, without `if __name__ == "__main__":` (what an Optuna user writes), then starts the whole sweep again
in every worker: each one started a temporary Prefect server of its own, failed with "An attempt has been
made to start a new process before the current process has finished its bootstrapping phase", and the
sweep died with `RuntimeError: Unexpected error within the Pool` after two minutes, leaving those servers
running. (The fork server's own preload of `__main__` never runs on Python 3.11/3.12: it looks for a
`main_path` key that `spawn.get_preparation_data` does not give.)

Here the fork server loads the script itself, once, before it forks any worker: the parent hands over
where its `__main__` comes from (`handed_to_fork_server`, in an environment variable the fork server reads
at start), and the fork server runs the script as `__mp_main__` while `sweep()` and `start_sweep()` refuse
to start (`skip_top_level_sweep`): the first one the script reaches ends the load, keeping everything the
script defined before it, which is everything its training function can use. The loaded module becomes
the fork server's `__main__`, so the workers it forks find it already in place and do not run the script
again. A guarded script loads whole, as before, only once instead of once per worker.

What this means for a script's top-level code: it runs a second time in the fork server, up to the sweep
(a temporary folder made at import is another folder there; a print prints twice), and never in a worker.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from importlib.util import find_spec
from multiprocessing import spawn
from typing import Any

# Where the parent's main script is, for the fork server to read once at its start (preparation data, JSON).
MAIN_SCRIPT_VARIABLE = "PREFECT_HPO_MAIN_SCRIPT"


class _LoadState:
    """This process's part in loading the parent's script (only the fork server ever loads one)."""

    loading = False  # True while the fork server runs the script
    error: str | None = None  # what stopped the load, other than the script's sweep


_STATE = _LoadState()


class _TopLevelSweep(BaseException):
    """Raised by `sweep()` (or a flow called) while the fork server loads the script: ends the load there.

    A BaseException, so that a script's own `except Exception:` around its sweep does not swallow it."""


def skip_top_level_sweep() -> None:
    """Called first by `sweep()` and `start_sweep()`: in the fork server, loading the user's script, the
    sweep the script calls at its top level must not start again; the load stops here instead."""
    if _STATE.loading:
        raise _TopLevelSweep


def top_level_entry(name: str) -> Any:
    """What `from prefect_hpo import sweep` (or `start_sweep`) gives a script while the fork server loads it,
    None elsewhere: a stand-in that ends the load as the real function would (`skip_top_level_sweep`), so
    that the fork server, and every worker forked from it, need not import Prefect for a function it never
    runs (about 1.2 s of the 1.6-2 s the first workers waited with a Prefect server already up)."""
    if not _STATE.loading or name not in ("sweep", "start_sweep"):
        return None

    def ends_the_load(*args: object, **kwargs: object) -> Any:
        raise _TopLevelSweep

    ends_the_load.__name__ = ends_the_load.__qualname__ = name
    return ends_the_load


#: Main modules that hold nothing a training function needs: loading one in the fork server only costs its
#: imports (Prefect's engine, 2 s of CPU here, in every trial runner).
_NOT_THE_USERS = frozenset({"prefect.engine", "prefect.flow_engine"})


def parent_main() -> dict[str, Any] | None:
    """Where this process's `__main__` comes from, as multiprocessing would tell a worker to load it;
    None where there is nothing to load (an interactive session, a notebook, `python -m pytest`)."""
    data = spawn.get_preparation_data("fork-server")
    name, path = data.get("init_main_from_name"), data.get("init_main_from_path")
    if name is not None and (name == "__main__" or name.endswith(".__main__")):
        return None  # multiprocessing never loads these in a worker either (pytest.__main__, ...)
    if name in _NOT_THE_USERS:
        return None  # a Prefect worker's flow-run process: its main is Prefect's engine, nothing of the user's
    if name is None and (path is None or os.path.splitext(os.path.basename(path))[0] == "ipython"):
        return None  # nothing to load, or IPython's launcher, which multiprocessing also leaves alone
    return {"name": name, "path": path, "sys_path": data["sys_path"], "argv": data["sys_argv"], "dir": data["dir"]}


@contextlib.contextmanager
def handed_to_fork_server() -> Iterator[None]:
    """Around the fork server's start: tell it, through its environment, which script to load.

    The variable is set only while the fork server process is being spawned. Another thread that starts
    a process at that very moment passes it on too; only a fork server of prefect_hpo reads it."""
    main = parent_main()
    if main is None:
        yield
        return
    os.environ[MAIN_SCRIPT_VARIABLE] = json.dumps(main)
    try:
        yield
    finally:
        os.environ.pop(MAIN_SCRIPT_VARIABLE, None)


def load_parent_main() -> None:
    """In the fork server: load the script the parent handed over as this process's `__main__`.

    Whatever the script raises (other than reaching its sweep) is kept, not raised: the fork server must
    keep serving, training functions sent by value do not need the script, and one sent by name says
    why it is missing (`load_error`)."""
    raw = os.environ.pop(MAIN_SCRIPT_VARIABLE, None)
    if not raw:
        return
    main = json.loads(raw)
    sys.path[:] = main["sys_path"]
    sys.argv[:] = main["argv"]
    module = types.ModuleType("__mp_main__")
    if main["name"] is not None:
        spec = find_spec(main["name"])
        if spec is None or spec.loader is None or spec.origin is None:
            return
        module.__spec__, module.__loader__, module.__file__ = spec, spec.loader, spec.origin
        module.__package__ = spec.parent
        path = spec.origin
    else:
        path = module.__file__ = main["path"]
    sys.modules["__mp_main__"] = module
    stdin, sys.stdin = sys.stdin, open(os.devnull)  # noqa: SIM115 - a script's input() must not wait on the terminal
    previous_dir = os.getcwd()
    _STATE.loading = True
    try:
        os.chdir(main["dir"])
        with open(path, "rb") as source:
            code = compile(source.read(), path, "exec")
        with _flows_stop_the_load():
            exec(code, module.__dict__)
    except _TopLevelSweep:
        pass
    except BaseException as exc:  # noqa: BLE001 - SystemExit (argparse) and errors alike: kept for `load_error`
        _STATE.error = f"{type(exc).__name__}: {exc}"
    finally:
        _STATE.loading = False
        sys.stdin.close()
        sys.stdin = stdin
        os.chdir(previous_dir)
    sys.modules["__main__"] = module  # workers find the script loaded (multiprocessing compares __file__)


@contextlib.contextmanager
def _flows_stop_the_load() -> Iterator[None]:
    """While the script loads, a Prefect flow it calls at its top level ends the load as its sweep would.

    A pipeline flow called without the guard (`pipeline()` at the bottom of the script, the sweep inside
    it) otherwise ran again in the fork server up to its sweep: its tasks, a temporary Prefect server of
    the fork server's own, and a flow run that crashed there with an ERROR in the log. Prefect has no
    hook before a flow starts, so `Flow.__call__` is replaced for the load alone: at once if Prefect's
    flows are imported already, else as the script imports them. A script that only sweeps never imports
    Prefect here (`top_level_entry`), which spares the fork server and its workers about a second."""
    patched: list[Any] = []

    def patch(flows: types.ModuleType) -> None:
        def stop(self: Any, *args: Any, **kwargs: Any) -> Any:
            raise _TopLevelSweep

        patched.append((flows.Flow, flows.Flow.__call__))
        flows.Flow.__call__ = stop

    finder = _OnImport("prefect.flows", patch)
    if "prefect.flows" in sys.modules:
        patch(sys.modules["prefect.flows"])
    else:
        sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
        for flow_class, call in patched:
            flow_class.__call__ = call


class _OnImport(importlib.abc.MetaPathFinder):
    """Runs `then(module)` right after the module `name` is first executed (found as the path finder would)."""

    def __init__(self, name: str, then: Callable[[types.ModuleType], None]) -> None:
        self._name, self._then = name, then

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self._name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenLoader(spec.loader, self._then)
        return spec


class _ThenLoader(importlib.abc.Loader):
    """A loader that runs `then(module)` after the real loader has executed the module."""

    def __init__(self, inner: importlib.abc.Loader, then: Callable[[types.ModuleType], None]) -> None:
        self._inner, self._then = inner, then

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._inner.exec_module(module)
        self._then(module)

    def __getattr__(self, name: str) -> Any:  # get_source and the like, for tracebacks
        return getattr(self._inner, name)


def load_error() -> str | None:
    """What stopped the fork server's load of the parent's script, other than its sweep (in a worker)."""
    return _STATE.error
