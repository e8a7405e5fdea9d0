"""Numbers as tables and artifacts show them: 6 significant digits.

Only what a person reads is rounded; the store, `SweepResult.trials` and the exports keep every digit.
"""

from __future__ import annotations

import math
from typing import Any

#: Significant digits of the numbers shown in tables and artifacts.
SIGNIFICANT_DIGITS = 6


def significant(value: Any, digits: int = SIGNIFICANT_DIGITS) -> Any:
    """A float rounded to `digits` significant digits (still a float, so tables sort it as a number);
    NaN and infinities as None (JSON has no such numbers); anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, float):
        return value
    if not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")
