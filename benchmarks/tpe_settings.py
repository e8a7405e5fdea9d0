"""Does a TPE setting close the gap to the digits calibration figures? Optuna alone, one row per setting.

    .venv/bin/python -m benchmarks.tpe_settings --seeds 0 1 2 3 4 5 6 7 8 9
    .venv/bin/python -m benchmarks.tpe_settings --problem hartmann6 --settings "tpe (defaults)" ...
    .venv/bin/python -m benchmarks.tpe_settings --budget-factor 5 --settings random "tpe (defaults)" \
        "tpe+sha min_resource 1"

The quality benchmark's digits MLP (benchmarks/quality.py) with Optuna's TPESampler under a few of its
settings, at full fidelity (30 trainings) and under Optuna's SuccessiveHalvingPruner (810 epochs), the
same budget and incumbent rule as `benchmarks.quality` (prefect_hpo's loop gives Optuna's figures with
the same sampler, seed and pruner, as that benchmark shows). It asks where the calibration figures
(TPE 0.057, TPE + successive halving 0.051) come from, not how fast anything is: rows run one after
another, two seeds at a time. `--budget-factor k` gives every row k times the budget: how low the problem
goes when a method is given far more than the calibration budget (its floor for that method).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from benchmarks.quality import PROBLEMS, incumbent_curve, optuna_events

#: name -> (TPESampler keyword arguments, SuccessiveHalvingPruner min_resource or None for full fidelity);
#: "random" is Optuna's RandomSampler, the reference point every TPE row should beat
SETTINGS: dict[str, tuple[dict[str, Any], int | None]] = {
    "random": ({}, None),
    "tpe (defaults)": ({}, None),
    "tpe multivariate": ({"multivariate": True}, None),
    "tpe independent": ({"multivariate": False}, None),
    "tpe multivariate, 5 startup trials": ({"multivariate": True, "n_startup_trials": 5}, None),
    "tpe 5 startup trials": ({"n_startup_trials": 5}, None),
    "tpe gamma 0.25 (hyperopt's)": ({"gamma": "hyperopt"}, None),
    "tpe+sha min_resource 1": ({}, 1),
    "tpe+sha min_resource 3": ({}, 3),
    "tpe gamma 0.25 +sha min_resource 1": ({"gamma": "hyperopt"}, 1),
    "tpe independent +sha min_resource 1": ({"multivariate": False}, 1),
}


def _hyperopt_gamma(n: int) -> int:
    """hyperopt's split: the best quarter of the trials (Optuna's default takes a tenth)."""
    return min(math.ceil(0.25 * n), 25)


def run(setting: str, seed: int, problem_name: str = "digits", budget_factor: int = 1) -> float:
    """Best value (regret on MF-Hartmann) of one seeded Optuna study under `setting`, at `budget_factor`
    times the quality benchmark's budget."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")  # `gamma` is deprecated since Optuna 4.9
    problem = PROBLEMS[problem_name]
    problem = dataclasses.replace(problem, full_budget=problem.full_budget * budget_factor)
    options, min_resource = SETTINGS[setting]
    options = dict(options)
    if options.get("gamma") == "hyperopt":
        options["gamma"] = _hyperopt_gamma
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.NopPruner()
        if min_resource is None
        else optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=3)
    )
    sampler = (
        optuna.samplers.RandomSampler(seed=seed)
        if setting == "random"
        else optuna.samplers.TPESampler(seed=seed, **options)
    )
    return incumbent_curve(optuna_events(problem, sampler, pruner), problem, [float(problem.full_budget)])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--problem", default="digits", choices=list(PROBLEMS))
    parser.add_argument("--budget-factor", type=int, default=1, help="run every row at k times the budget")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # two single-threaded seeds at a time on 2 cores
    problem = PROBLEMS[args.problem]
    what = "simple regret" if problem.optimum is not None else "best validation log-loss"
    budget = problem.full_budget * args.budget_factor
    print(f"{args.problem}, Optuna alone, seeds {args.seeds}; {what} at {budget} full evaluations\n")
    print("| setting | median | IQR | per seed |")
    print("| --- | ---: | ---: | --- |")
    with ProcessPoolExecutor(max_workers=2) as pool:
        for setting in args.settings:
            n = len(args.seeds)
            values = list(pool.map(run, [setting] * n, args.seeds, [args.problem] * n, [args.budget_factor] * n))
            q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
            per_seed = json.dumps([round(v, 4) for v in values])
            print(f"| {setting} | {q[1]:.4f} | {q[0]:.4f}-{q[2]:.4f} | {per_seed} |", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
