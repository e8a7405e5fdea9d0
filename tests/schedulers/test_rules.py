"""The pure rules, on hand-computed sequences."""

from __future__ import annotations

import math

from prefect_hpo.schedulers.base import asha_keeps, median_stops, worst_last


def test_asha_keeps_the_top_third() -> None:
    # 6 trials at the rung, rf=3: the 2 best are kept; ties with the 2nd best are kept
    scores = [0.5, 0.1, 0.9, 0.3, 0.7, 0.6]
    assert [asha_keeps(s, scores, 3) for s in scores] == [False, True, False, True, False, False]
    assert asha_keeps(0.3, [*scores, 0.3], 3)  # 7 trials: still top 2; 0.3 ties the 2nd best


def test_asha_with_too_few_trials_keeps_only_the_best_so_far() -> None:
    assert asha_keeps(0.4, [0.4], 3)  # alone: kept
    assert not asha_keeps(0.5, [0.4, 0.5], 3)  # 2 < rf: must be the best
    assert asha_keeps(0.4, [0.5, 0.4], 3)
    assert asha_keeps(0.4, [0.4, 0.4], 3)  # a tie with the best is kept


def test_asha_treats_nan_as_the_worst() -> None:
    assert not asha_keeps(math.nan, [math.nan], 3)
    assert asha_keeps(0.9, [math.nan, math.nan, 0.9], 3)
    assert worst_last([math.nan, 0.2, 0.1]) == [0.1, 0.2, math.inf]


def test_median_rule() -> None:
    others = [0.2, 0.4, 0.6]
    assert median_stops(0.5, others, min_samples=3)  # median 0.4, 0.5 is worse
    assert not median_stops(0.4, others, min_samples=3)  # equal to the median: go on
    assert not median_stops(0.9, others[:2], min_samples=3)  # too few others to judge
    assert not median_stops(0.45, [0.2, 0.4, 0.5, 0.6], min_samples=3)  # even count: median (0.4 + 0.5) / 2
    assert median_stops(0.46, [0.2, 0.4, 0.5, 0.6], min_samples=3)
    assert not median_stops(0.45, [0.2, 0.4, 0.5, 0.6, math.nan], min_samples=5)  # NaN others do not count
    assert median_stops(math.nan, others, min_samples=3)
