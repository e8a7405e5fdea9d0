"""The median stopping rule through a real store."""

from __future__ import annotations

from prefect_hpo.schedulers import MedianStoppingScheduler
from tests.schedulers.helpers import drive


def test_median_rule_on_a_hand_sequence(sqlite_url: str) -> None:
    median = MedianStoppingScheduler(grace_period=2, min_samples=3)
    events = [
        (n, s, v) for n, vals in {0: [0.2, 0.2], 1: [0.4, 0.4], 2: [0.6, 0.6]}.items() for s, v in enumerate(vals, 1)
    ]
    # trial 3 at step 1: inside the grace period; at step 2 its best (0.5) is worse than the median
    # of the others' running averages up to step 2 (0.2, 0.4, 0.6 -> 0.4): stopped
    events += [(3, 1, 0.5), (3, 2, 0.55), (3, 3, 0.1)]
    # trial 4 improves to 0.3 by step 2: best 0.3 <= median 0.4 -> kept
    events += [(4, 1, 0.9), (4, 2, 0.3)]
    assert drive(median, sqlite_url, events) == {3: 2}


def test_median_needs_enough_other_trials(sqlite_url: str) -> None:
    median = MedianStoppingScheduler(grace_period=0, min_samples=3)
    events = [(0, 1, 0.1), (1, 1, 0.9), (2, 1, 0.95)]
    assert drive(median, sqlite_url, events) == {}  # never more than 2 others
