"""Search quality on problems with known optima: prefect_hpo against Optuna alone and Ray Tune.

    .venv/bin/python -m benchmarks.quality --problems hartmann3 hartmann6 --seeds 0 1 2 3 4 5 6 7 8 9
    .venv/bin/python -m benchmarks.quality --problems digits --seeds 0 1 2

Problems (benchmarks/problems.py, flows/digits_mlp.py):
- MF-Hartmann 3 and 6: fidelity steps 1..100 (z = step / 100), budget 50 full-fidelity evaluations
  (5,000 steps). A trial is evaluated at the steps where a rung can stop it (1, 3, 9, 27, 81) and at 100.
- digits MLP: validation log-loss after each of up to 27 epochs, budget 30 full trainings (810 epochs);
  a trial's value is its best epoch (what an early-stopping checkpoint keeps).

Methods, all sequential (one trial at a time), all with the same seed per row:
- ours: random, tpe (full fidelity, FIFO), random+asha, tpe+asha (strategy "tpe", Optuna's TPE, under our
  ASHA), bohb (strategy "bohb" under ASHA), random+hyperband; ASHA/Hyperband with grace 1, reduction
  factor 3, max_t.
- optuna: random, tpe, random+sha, tpe+sha: `study.optimize` with Optuna's SuccessiveHalvingPruner
  (min_resource 1, reduction factor 3), stopped when the step budget is spent.
- ray: random+asha: Ray Tune's ASHAScheduler (time_attr step, grace 1, reduction factor 3) over random
  search, stopped when the step budget is spent.

Budget is counted in full-fidelity units: steps trained / max_t. The incumbent after a budget b is the
best value among trials that reached full fidelity with at most b spent (MF-Hartmann: its regret
against the known optimum). Printed: median and interquartile range over seeds at the full budget, the
median budget needed to reach a target, and a PNG per problem (median and IQR band against budget).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.problems import OPTIMUM, noisy_hartmann

Event = tuple[int, float | None]  # (steps this trial trained, its full-fidelity value or None)
OURS = ("random", "tpe", "random+asha", "tpe+asha", "bohb", "random+hyperband")
OPTUNA = ("random", "tpe", "random+sha", "tpe+sha")
RAY = ("random+asha",)
RESULTS = Path(__file__).with_name("results")


@dataclass(frozen=True)
class Problem:
    name: str
    max_t: int
    full_budget: int  # full-fidelity evaluations
    optimum: float | None
    target: float  # regret (or best loss) to reach in "budget to target"

    @property
    def space(self) -> dict[str, Any]:
        from prefect_hpo import Float

        if self.name == "digits":
            from flows.digits_mlp import SPACE

            return {k: v for k, v in SPACE.items() if k != "epochs"}
        return {f"x{i}": Float(0.0, 1.0) for i in range(int(self.name.removeprefix("hartmann")))}

    def curve(self, config: dict[str, Any]) -> Iterator[tuple[int, float]]:
        """(step, value) at each evaluation step; the work up to a step is done when it is asked for."""
        if self.name == "digits":
            yield from _digits_curve(config, self.max_t)
            return
        x = tuple(config[f"x{i}"] for i in range(len(config)))
        levels = sorted({*(3**k for k in range(10) if 3**k < self.max_t), self.max_t})
        for step in levels:
            yield step, noisy_hartmann(x, step / self.max_t)


PROBLEMS = {
    "hartmann3": Problem("hartmann3", 100, 50, OPTIMUM[3], 0.05),
    "hartmann6": Problem("hartmann6", 100, 50, OPTIMUM[6], 0.5),
    "digits": Problem("digits", 27, 30, None, 0.06),
}


def _digits_curve(config: dict[str, Any], epochs: int) -> Iterator[tuple[int, float]]:
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import log_loss

    from flows.digits_mlp import data, make_model

    x_train, x_val, y_train, y_val = data()
    model, classes, best = make_model(config), np.unique(y_train), math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for epoch in range(1, epochs + 1):
            model.partial_fit(x_train, y_train, classes=classes)
            best = min(best, float(log_loss(y_val, model.predict_proba(x_val), labels=classes)))
            yield epoch, best


# ---- prefect_hpo ------------------------------------------------------------------------------


def _our_trial(config: dict[str, Any], trial: Any) -> float:
    problem = PROBLEMS[config["problem"]]
    value = math.nan
    for step, value in problem.curve({k: v for k, v in config.items() if k != "problem"}):
        trial.report(step, value=value)
    return value


def run_ours(problem: Problem, method: str, seed: int, folder: str) -> list[Event]:
    """One sweep through prefect_hpo; the trials in the order they ended."""
    from prefect_hpo import Budget, TrialState, sweep

    sampler, _, scheduler = method.partition("+")
    strategy: Any = sampler
    if method == "bohb":
        scheduler = "asha"
    steps = problem.full_budget * problem.max_t
    budget = (
        Budget(max_trials=problem.full_budget, max_concurrent=1)
        if not scheduler
        else Budget(max_trials=None, max_total_steps=steps, max_concurrent=1)
    )
    result = sweep(
        _our_trial,
        {**problem.space, "problem": problem.name},
        "value",
        strategy,
        budget,
        storage=f"sqlite:///{folder}/ours.db",
        name=f"{problem.name}-{method.replace('+', '-')}-{seed}",
        scheduler={"type": scheduler, "max_t": problem.max_t, "grace_period": 1, "reduction_factor": 3}
        if scheduler
        else None,
        seed=seed,
        workers="threads",
        show_progress=False,
        artifact_interval=None,
    )
    ended = sorted(result.records, key=lambda r: r.finished_at or 0.0)
    return [
        (r.last_step or 0, r.value if r.state == TrialState.COMPLETE and r.last_step == problem.max_t else None)
        for r in ended
    ]


# ---- Optuna alone -----------------------------------------------------------------------------


def run_optuna(problem: Problem, method: str, seed: int, folder: str) -> list[Event]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler_name, _, pruning = method.partition("+")
    sampler = (
        optuna.samplers.TPESampler(seed=seed) if sampler_name == "tpe" else optuna.samplers.RandomSampler(seed=seed)
    )
    pruner = (
        optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
        if pruning
        else optuna.pruners.NopPruner()
    )
    return optuna_events(problem, sampler, pruner)


def optuna_events(problem: Problem, sampler: Any, pruner: Any) -> list[Event]:
    """One Optuna study of `problem` until the budget is spent: full-fidelity evaluations without a
    pruner (a NopPruner), steps in full-fidelity units with one; the trials in the order they ended."""
    import optuna

    from prefect_hpo.space import SearchSpace

    space = SearchSpace.build(problem.space)
    pruning = not isinstance(pruner, optuna.pruners.NopPruner)
    study = optuna.create_study(sampler=sampler, pruner=pruner)
    events: list[Event] = []
    budget = problem.full_budget * problem.max_t

    def objective(trial: optuna.Trial) -> float:
        value = math.nan
        for step, value in problem.curve(space.suggest(trial)):
            trial.report(value, step)
            if trial.should_prune():
                events.append((step, None))
                raise optuna.TrialPruned()
        events.append((problem.max_t, value))
        return value

    def spent(study: optuna.Study, _: Any) -> None:
        if sum(e[0] for e in events) >= budget or (not pruning and len(events) >= problem.full_budget):
            study.stop()

    study.optimize(objective, n_trials=100_000, callbacks=[spent])
    return events


# ---- Ray Tune ---------------------------------------------------------------------------------


def run_ray(problem: Problem, method: str, seed: int, folder: str) -> list[Event]:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.stopper import Stopper

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    budget = problem.full_budget * problem.max_t

    class StepBudget(Stopper):
        """Stops the experiment once the trials have trained `budget` steps between them."""

        def __init__(self) -> None:
            self.reached: dict[str, int] = {}

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            self.reached[trial_id] = int(result["step"])
            return False

        def stop_all(self) -> bool:
            return sum(self.reached.values()) >= budget

    def trainable(config: dict[str, Any]) -> None:
        for step, value in PROBLEMS[config.pop("problem")].curve(config):
            tune.report({"value": value, "step": step})

    param_space: dict[str, Any] = {"problem": problem.name}
    for name, dist in _ray_space(problem).items():
        param_space[name] = dist
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric="value",
            mode="min",
            num_samples=budget,  # more than fit: the step budget ends it
            max_concurrent_trials=1,
            reuse_actors=True,  # Ray's faster mode: one actor runs trial after trial
            scheduler=ASHAScheduler(time_attr="step", max_t=problem.max_t, grace_period=1, reduction_factor=3),
            search_alg=BasicVariantGenerator(random_state=seed),
        ),
        run_config=tune.RunConfig(
            storage_path=folder, name=f"{problem.name}-{seed}", stop=StepBudget(), verbose=0, log_to_file=False
        ),
    )
    grid = tuner.fit()
    # one trial at a time, so trial ids (..._00042) give the order they ran; trials the stop left unstarted
    # have no metrics
    ended = sorted((r for r in grid if r.metrics and "step" in r.metrics), key=lambda r: r.metrics["trial_id"])
    return [
        (int(r.metrics["step"]), float(r.metrics["value"]) if r.metrics["step"] == problem.max_t else None)
        for r in ended
    ]


def _ray_space(problem: Problem) -> dict[str, Any]:
    from ray import tune

    if problem.name != "digits":
        return {name: tune.uniform(0.0, 1.0) for name in problem.space}
    return {
        "lr": tune.loguniform(1e-4, 1e-1),
        "alpha": tune.loguniform(1e-6, 1e-2),
        "layers": tune.randint(1, 4),
        "units": tune.lograndint(16, 129),
        "act": tune.choice(["relu", "tanh"]),
        "batch_size": tune.choice([32, 64, 128]),
    }


RUNNERS: dict[str, tuple[tuple[str, ...], Callable[[Problem, str, int, str], list[Event]]]] = {
    "ours": (OURS, run_ours),
    "optuna": (OPTUNA, run_optuna),
    "ray": (RAY, run_ray),
}


# ---- curves, tables, plots --------------------------------------------------------------------


def incumbent_curve(events: list[Event], problem: Problem, grid: list[float]) -> list[float]:
    """Regret (or best value) of the best full-fidelity trial after each budget in `grid` (full-fidelity units)."""
    spent, best, points = 0.0, math.inf, []
    for steps, value in events:
        spent += steps / problem.max_t
        if value is not None:
            best = min(best, value)
        points.append((spent, best))
    offset = problem.optimum or 0.0
    curve = []
    for b in grid:
        reached = [v for s, v in points if s <= b + 1e-9]
        curve.append(min(reached, default=math.inf) - offset)
    return curve


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    finite = sorted(values)
    q = statistics.quantiles(finite, n=4, method="inclusive") if len(finite) > 1 else [finite[0]] * 3
    return q[0], statistics.median(finite), q[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=["hartmann3", "hartmann6"], choices=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--frameworks", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    parser.add_argument("--methods", nargs="+", choices=sorted({*OURS, *OPTUNA, *RAY}), help="only these methods")
    parser.add_argument("--plots", default=str(RESULTS), help="folder for the PNG plots")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    Path(args.plots).mkdir(parents=True, exist_ok=True)
    for name in args.problems:
        problem = PROBLEMS[name]
        grid = [i / 4 for i in range(1, 4 * problem.full_budget + 1)]
        curves: dict[str, list[list[float]]] = {}
        seconds: dict[str, list[float]] = {}
        with tempfile.TemporaryDirectory() as folder:
            for framework in args.frameworks:
                methods, runner = RUNNERS[framework]
                for method in (m for m in methods if args.methods is None or m in args.methods):
                    label = f"{framework} {method}"
                    for seed in args.seeds:
                        started = time.perf_counter()
                        events = runner(problem, method, seed, folder)
                        seconds.setdefault(label, []).append(time.perf_counter() - started)
                        curves.setdefault(label, []).append(incumbent_curve(events, problem, grid))
                    print(f"  {name}: {label} done ({statistics.median(seconds[label]):.1f} s a run)", flush=True)
        _table(problem, grid, curves, seconds, len(args.seeds))
        _plot(problem, grid, curves, Path(args.plots) / f"quality_{name}.png")


def _table(
    problem: Problem, grid: list[float], curves: dict[str, list[list[float]]], seconds: dict[str, list[float]], n: int
) -> None:
    what = "simple regret" if problem.optimum is not None else "best validation log-loss"
    print(
        f"\n{problem.name}: {what} after {problem.full_budget} full-fidelity evaluations "
        f"(max_t {problem.max_t}), {n} seeds\n"
    )
    print(f"| method | median | IQR | budget to {problem.target:g} (median) | runs reaching it | s a run |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, runs in curves.items():
        low, median, high = _quartiles([run[-1] for run in runs])
        hits = [next((b for b, v in zip(grid, run, strict=True) if v <= problem.target), None) for run in runs]
        reached = [h for h in hits if h is not None]
        to_target = f"{statistics.median(reached):.1f}" if len(reached) * 2 > len(runs) else "-"
        print(
            f"| {label} | {median:.4f} | {low:.4f}-{high:.4f} | {to_target} | {len(reached)}/{len(runs)} "
            f"| {statistics.median(seconds[label]):.1f} |"
        )


def _plot(problem: Problem, grid: list[float], curves: dict[str, list[list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for label, runs in curves.items():
        columns = list(zip(*runs, strict=True))
        bands = [_quartiles([v for v in col]) for col in columns]
        shown = [i for i, (_, m, _) in enumerate(bands) if math.isfinite(m)]
        xs = [grid[i] for i in shown]
        ax.plot(xs, [bands[i][1] for i in shown], label=label, linestyle="--" if not label.startswith("ours") else "-")
        lows = [bands[i][0] for i in shown]
        highs = [bands[i][2] if math.isfinite(bands[i][2]) else bands[i][1] for i in shown]
        ax.fill_between(xs, lows, highs, alpha=0.12)
    ax.set_xlabel("budget spent (full-fidelity evaluations)")
    ax.set_ylabel("simple regret" if problem.optimum is not None else "best validation log-loss")
    ax.set_yscale("log")
    ax.set_title(f"{problem.name}: median and interquartile range over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
