"""Schedulers saved with state_dict() and loaded elsewhere decide as before (their data is in the store)."""

from __future__ import annotations

import json

import pytest

from prefect_hpo.schedulers import ASHAScheduler, FIFOScheduler, HyperbandScheduler, MedianStoppingScheduler


@pytest.mark.parametrize(
    ("saved", "blank"),
    [
        (ASHAScheduler(max_t=27, grace_period=3, reduction_factor=3, mode="promotion"), ASHAScheduler()),
        (HyperbandScheduler(max_t=81, grace_period=1, reduction_factor=3, seed=4), HyperbandScheduler()),
        (MedianStoppingScheduler(grace_period=5, min_samples=4), MedianStoppingScheduler()),
        (FIFOScheduler(max_t=10), FIFOScheduler()),
    ],
)
def test_a_loaded_scheduler_equals_the_saved_one(saved: object, blank: object) -> None:
    assert blank != saved
    blank.load_state_dict(json.loads(json.dumps(saved.state_dict())))  # type: ignore[attr-defined]
    assert blank == saved
    assert [blank.bracket_for(n) for n in range(20)] == [saved.bracket_for(n) for n in range(20)]  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="state"):
        FIFOScheduler().load_state_dict({"class": "Nope"})
