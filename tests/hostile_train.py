"""A training function that misbehaves on purpose, importable by a sweep running in a child process.

`config["case"]` says how: "ok-*" trials report and return a loss; the others end the way a careless or
hostile training function might (sys.exit, KeyboardInterrupt, a result no float can hold, inf, NaN).
"""

from __future__ import annotations

import sys
from typing import Any

#: Each misbehaving case, in the order the grid runs them (good trials in between).
CASES = ["exit0", "ok-a", "exit3", "keyboard", "ok-b", "systemexit", "huge", "ok-c", "inf", "nan", "ok-d", "ok-e"]


def hostile(config: dict[str, Any], trial: Any) -> Any:
    case = config["case"]
    trial.report(1, loss=1.0)
    if case == "exit0":
        sys.exit(0)
    if case == "exit3":
        sys.exit(3)
    if case == "keyboard":
        raise KeyboardInterrupt
    if case == "systemexit":
        raise SystemExit("training is over")
    if case == "huge":
        return 10**400
    if case == "inf":
        return float("inf")
    if case == "nan":
        return float("nan")
    return 0.5 + CASES.index(case) / 100
