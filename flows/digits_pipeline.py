"""An ML pipeline with a sweep inside: prepare data -> sweep (a subflow) -> retrain the best on all data -> save.

    .venv/bin/python -m flows.digits_pipeline [--trials 12] [--epochs 20] [--out runs/digits-pipeline]

Each step is Prefect work in one flow run: the data step is a task, the sweep is
the `hpo-sweep` subflow, the retraining is `run_with_config` (a task), and the
saved model's path comes back with the sweep's result as plain JSON.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, task
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from flows.digits_mlp import SPACE, fit_and_report, make_model
from prefect_hpo import Budget, Fixed, run_with_config, sweep
from prefect_hpo.trial import Trial


@task
def prepare_data(out: str) -> str:
    """Standardise digits and keep a validation split; the arrays go to one .npz file the trials read."""
    x, y = load_digits(return_X_y=True)
    x = StandardScaler().fit_transform(x)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    path = Path(out) / "digits.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y, x_train=x_train, x_val=x_val, y_train=y_train, y_val=y_val)
    return str(path)


def train_on_split(config: dict[str, Any], trial: Trial) -> dict[str, float]:
    """A sweep trial: fit on the training split of the prepared data, judged on its validation split."""
    with np.load(config["data"]) as d:
        return fit_and_report(config, trial, d["x_train"], d["x_val"], d["y_train"], d["y_val"])


def fit_final(config: dict[str, Any], trial: Trial) -> MLPClassifier:
    """The retraining: the chosen configuration on all the prepared data, for its number of epochs."""
    with np.load(config["data"]) as d:
        x, y = d["x"], d["y"]
    model = make_model(config)
    classes = np.unique(y)
    for epoch in range(1, config["epochs"] + 1):
        model.partial_fit(x, y, classes=classes)
        trial.report(epoch, train_acc=float(model.score(x, y)))
    return model


@task
def save_model(model: MLPClassifier, config: dict[str, Any], out: str) -> str:
    path = Path(out) / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    (Path(out) / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return str(path)


@flow(name="digits-pipeline")
def digits_pipeline(
    trials: int = 12, epochs: int = 20, out: str = "runs/digits-pipeline", storage: str | None = None
) -> dict[str, Any]:
    """Prepare the data, tune the MLP, retrain the best configuration on all the data, save it."""
    data = prepare_data(out)
    space = {**SPACE, "epochs": Fixed(epochs), "data": Fixed(data)}
    result = sweep(
        train_on_split,
        space,
        "val_loss",
        "tpe",
        Budget(max_trials=trials, max_concurrent=2),
        storage=storage or f"sqlite:///{Path(out).resolve() / 'hpo.db'}",
        name="digits-pipeline",
        seed=0,
    )
    if result.best_config is None:
        raise RuntimeError(f"no trial of the sweep completed ({result.stop_reason}); see result.trials")
    final = run_with_config(fit_final, result.best_config)
    model_path = save_model(final.returned, result.best_config, out)
    return {"model": model_path, "final_train_acc": final.reports[-1].metrics["train_acc"], "sweep": result.to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="runs/digits-pipeline")
    args = parser.parse_args()
    summary = digits_pipeline(trials=args.trials, epochs=args.epochs, out=args.out)
    sweep_part = summary["sweep"]
    print(f"best val_loss {sweep_part['best_value']:.4f} with {sweep_part['best_config']}")
    print(f"retrained on all data (train accuracy {summary['final_train_acc']:.3f}); model saved to {summary['model']}")


if __name__ == "__main__":
    main()
