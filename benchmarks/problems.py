"""Multi-fidelity test problems with known optima, written from their published definitions.

MF-Hartmann (Kandasamy et al., 2017, "Multi-fidelity Bayesian optimisation with continuous
approximations"; used with noise in mf-prior-bench): the Hartmann function with
alpha'_i = alpha_i - 0.1 * (1 - z) at fidelity z in (0, 1], plus Gaussian noise whose
standard deviation shrinks to zero at full fidelity, so low fidelities are cheap, biased
and noisy looks at the same landscape. The optimum at z = 1 is the Hartmann minimum.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any

ALPHA = (1.0, 1.2, 3.0, 3.2)
A3 = ((3.0, 10.0, 30.0), (0.1, 10.0, 35.0), (3.0, 10.0, 30.0), (0.1, 10.0, 35.0))
P3 = ((0.3689, 0.1170, 0.2673), (0.4699, 0.4387, 0.7470), (0.1091, 0.8732, 0.5547), (0.0381, 0.5743, 0.8828))
A6 = (
    (10.0, 3.0, 17.0, 3.5, 1.7, 8.0),
    (0.05, 10.0, 17.0, 0.1, 8.0, 14.0),
    (3.0, 3.5, 1.7, 10.0, 17.0, 8.0),
    (17.0, 8.0, 0.05, 10.0, 0.1, 14.0),
)
P6 = (
    (0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886),
    (0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991),
    (0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650),
    (0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381),
)
OPTIMUM = {3: -3.86278, 6: -3.32237}


def hartmann(x: tuple[float, ...], z: float = 1.0) -> float:
    """Noise-free MF-Hartmann value at point `x` (3 or 6 coordinates in [0, 1]) and fidelity `z`."""
    a, p = (A3, P3) if len(x) == 3 else (A6, P6)
    total = 0.0
    for alpha, a_row, p_row in zip(ALPHA, a, p, strict=True):
        inner = sum(aij * (xj - pij) ** 2 for aij, xj, pij in zip(a_row, x, p_row, strict=True))
        total += (alpha - 0.1 * (1.0 - z)) * math.exp(-inner)
    return -total


def noisy_hartmann(x: tuple[float, ...], z: float, noise: float = 0.1) -> float:
    """MF-Hartmann with noise of std `noise * (1 - z)`, deterministic in (x, z)."""
    key = hashlib.sha256(repr((x, round(z, 9))).encode()).digest()
    return hartmann(x, z) + random.Random(key).gauss(0.0, noise * (1.0 - z))


def hartmann_space(dims: int) -> dict[str, Any]:
    from prefect_hpo import Float

    return {f"x{i}": Float(0.0, 1.0) for i in range(dims)}


def hartmann_trial(config: dict[str, Any], trial: Any, max_t: int = 27) -> dict[str, float]:
    """A trial on MF-Hartmann: one report per fidelity step 1..max_t (z = step / max_t)."""
    x = tuple(config[f"x{i}"] for i in range(len(config)))
    value = math.nan
    for step in range(1, max_t + 1):
        value = noisy_hartmann(x, step / max_t)
        trial.report(step, value=value)
    return {"value": value}


def noisy_sgd_trial(config: dict[str, Any], trial: Any) -> None:
    """A toy whose best learning rate changes over time: SGD on w², from w = 10, with gradient noise.

    Each step w <- w - lr * (2w + noise), noise of variance 1; the loss reported is the expected w²
    (mean² + variance, tracked exactly: mean <- (1 - 2 lr) mean, variance <- (1 - 2 lr)² variance + lr²),
    so that runs differ by their learning rates only, not by luck. A large rate gets the mean down fast
    but leaves a floor of about lr/4; a small one has a low floor but gets there slowly. The best fixed
    rate trades the two off; a schedule that starts large and decays beats it. The state (mean, variance,
    step, the trials it passed through) is checkpointed, so that a trial can go on from another's.
    """
    state = trial.load_checkpoint() if trial.resume_step else None
    if state is None:
        state = {"mean": 10.0, "var": 0.0, "step": 0, "path": []}
    mean, var, step = state["mean"], state["var"], state["step"]
    path = [*state["path"], trial.number]
    lr = config["lr"]
    while True:
        step += 1
        mean *= 1.0 - 2.0 * lr
        var = (1.0 - 2.0 * lr) ** 2 * var + lr * lr
        trial.save_checkpoint({"mean": mean, "var": var, "step": step, "path": path})
        trial.report(step, loss=mean * mean + var)  # ends the trial (TrialStopped) at its last step
