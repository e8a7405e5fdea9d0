"""ASHA and async Hyperband through a real store: rungs, skipped steps, arrival order, brackets, Optuna parity."""

from __future__ import annotations

import random
from collections import Counter

import optuna
import pytest

from prefect_hpo.errors import PrefectHPOError
from prefect_hpo.schedulers import ASHAScheduler, AsyncHyperbandScheduler, HyperbandScheduler, build_scheduler
from tests.schedulers.helpers import drive


def test_rung_levels() -> None:
    assert ASHAScheduler(max_t=27, grace_period=1, reduction_factor=3).levels == (1, 3, 9)
    assert ASHAScheduler(max_t=100, grace_period=2, reduction_factor=2).levels == (2, 4, 8, 16, 32, 64)
    assert ASHAScheduler(max_t=50, rung_levels=(5, 1, 20)).levels == (1, 5, 20)  # explicit levels win
    assert HyperbandScheduler(max_t=27).brackets == 3
    assert HyperbandScheduler(max_t=27).bracket_levels(2) == (9,)
    with pytest.raises(PrefectHPOError, match="reduction_factor must be > 1"):
        ASHAScheduler(reduction_factor=1)
    with pytest.raises(PrefectHPOError, match="no rung below max_t"):
        ASHAScheduler(max_t=3, grace_period=5)
    with pytest.raises(PrefectHPOError, match="brackets must be between 1 and"):
        AsyncHyperbandScheduler(max_t=27, brackets=5)


def test_hand_computed_sequence_with_ties_and_too_few_trials(sqlite_url: str) -> None:
    asha = ASHAScheduler(max_t=10, rung_levels=(2,), reduction_factor=2)
    # trials reach rung 2 in this order with these values (lower is better)
    arrivals = [(0, 0.5), (1, 0.7), (2, 0.5), (3, 0.4), (4, 0.9), (5, 0.45)]
    events = [(n, 2, v) for n, v in arrivals]
    stopped = drive(asha, sqlite_url, events)
    # 0: alone -> kept. 1: [0.5, 0.7], keep 1 -> 0.7 stops. 2: [.5,.7,.5], keep 1, ties the best -> kept.
    # 3: [.5,.7,.5,.4], keep 2 (.4,.5) -> kept. 4: 5 scores, keep 2 -> stops. 5: 6 scores, keep 3 (.4,.45,.5) -> kept
    assert stopped == {1: 2, 4: 2}


def test_a_report_that_skips_steps_crosses_every_rung_it_passes(sqlite_url: str) -> None:
    asha = ASHAScheduler(max_t=27, grace_period=1, reduction_factor=3)
    events = [(0, 1, 0.1), (0, 3, 0.1), (0, 9, 0.1), (1, 10, 0.5)]  # trial 1 jumps from nothing to step 10
    assert drive(asha, sqlite_url, events) == {1: 10}  # judged at rung 1 (second best of 2: stop)


def test_arrival_order_decides_not_trial_numbers(sqlite_url: str, tmp_path: object) -> None:
    asha = ASHAScheduler(max_t=10, rung_levels=(1,), reduction_factor=2)
    a = drive(asha, sqlite_url, [(0, 1, 0.9), (1, 1, 0.1)])  # bad first: kept alone; good second: kept
    assert a == {}
    b = drive(asha, f"{sqlite_url[:-3]}2.db", [(1, 1, 0.1), (0, 1, 0.9)])  # good first: bad second is stopped
    assert b == {0: 1}


def test_decisions_are_deterministic(sqlite_url: str) -> None:
    rng = random.Random(5)
    events = [(n, s, rng.random()) for s in range(1, 12) for n in range(8)]
    scheduler = HyperbandScheduler(max_t=27, seed=3)
    first = drive(scheduler, sqlite_url, events)
    second = drive(scheduler, f"{sqlite_url[:-3]}b.db", events)
    assert first == second and first


def test_brackets_are_drawn_with_hyperband_weights() -> None:
    hb = HyperbandScheduler(max_t=27, reduction_factor=3, seed=0)
    counts = Counter(hb.bracket_for(n) for n in range(3000))
    # weights (3/3)*9, (3/2)*3, (3/1)*1 = 9 : 4.5 : 3
    assert counts[0] > counts[1] > counts[2] > 0
    assert counts[0] / 3000 == pytest.approx(9 / 16.5, abs=0.04)
    assert [hb.bracket_for(n) for n in range(20)] == [hb.bracket_for(n) for n in range(20)]


def test_shared_rungs_compare_across_brackets(sqlite_url: str) -> None:
    shared = AsyncHyperbandScheduler(max_t=27, grace_period=1, reduction_factor=3, brackets=2, rung_system="shared")
    brackets = {n: shared.bracket_for(n) for n in range(40)}
    in_one = [n for n, b in brackets.items() if b == 1][:1]
    in_zero = [n for n, b in brackets.items() if b == 0][:1]
    # bracket 1's first rung is step 3; bracket 0's second rung is also step 3: shared, they compete
    events = [(in_zero[0], 1, 0.1), (in_zero[0], 3, 0.1), (in_one[0], 3, 0.9)]
    assert drive(shared, sqlite_url, events) == {in_one[0]: 3}
    per = AsyncHyperbandScheduler(max_t=27, grace_period=1, reduction_factor=3, brackets=2)
    assert drive(per, f"{sqlite_url[:-3]}p.db", events) == {}  # per bracket: alone in its rung, kept


def test_nan_at_a_rung_stops(sqlite_url: str) -> None:
    asha = ASHAScheduler(max_t=10, rung_levels=(2,))
    assert drive(asha, sqlite_url, [(0, 1, float("nan")), (0, 2, float("nan"))]) == {0: 2}


def optuna_stops(events: list[tuple[int, int, float]], rf: int, maximize: bool) -> dict[int, int]:
    """The same reports through Optuna's SuccessiveHalvingPruner (min_resource=1)."""
    study = optuna.create_study(
        direction="maximize" if maximize else "minimize",
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=rf),
    )
    trials: dict[int, optuna.Trial] = {}
    stopped: dict[int, int] = {}
    for number, step, value in events:
        if number in stopped:
            continue
        trial = trials.setdefault(number, study.ask())
        trial.report(value, step)
        if trial.should_prune():
            stopped[number] = step
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return stopped


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_optuna_successive_halving(sqlite_url: str, seed: int, maximize: bool) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(seed)
    quality = {n: rng.random() for n in range(15)}
    # 15 trials report steps 1..26 interleaved in a random order per step, as concurrent trials would
    events = []
    for step in range(1, 27):
        order = list(quality)
        rng.shuffle(order)
        events += [(n, step, quality[n] + rng.random() * 0.3 / step) for n in order]
    ours = drive(ASHAScheduler(max_t=27, grace_period=1, reduction_factor=3), sqlite_url, events, maximize=maximize)
    assert ours == optuna_stops(events, 3, maximize)
    assert 5 <= len(ours) < 15  # the rule really stopped some and kept some


def test_build_scheduler_forms() -> None:
    assert build_scheduler("asha").levels == ASHAScheduler().levels  # type: ignore[attr-defined]
    built = build_scheduler({"type": "hyperband", "max_t": 9, "rung_levels": [1, 3]}, seed=4)
    assert built.levels == (1, 3) and built.seed == 4  # type: ignore[attr-defined]
    with pytest.raises(PrefectHPOError, match="'pbt' is unknown"):
        build_scheduler("pbt")
    with pytest.raises(PrefectHPOError, match="unexpected keyword"):
        build_scheduler({"type": "asha", "eta": 3})
