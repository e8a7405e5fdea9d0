"""A training function to tune: a small MLP on scikit-learn's bundled digits, one report per epoch."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from prefect_hpo import Categorical, Float, Int
from prefect_hpo.trial import Trial

SPACE = {
    "lr": Float(1e-4, 1e-1, log=True),
    "alpha": Float(1e-6, 1e-2, log=True),
    "layers": Int(1, 3),
    "units": Int(16, 128, log=True),
    "act": Categorical(["relu", "tanh"]),
    "batch_size": Categorical([32, 64, 128]),
    "epochs": 20,
}


@functools.cache
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/validation split of digits, standardised; loaded once per process."""
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_val), y_train, y_val


def train(config: dict[str, Any], trial: Trial) -> dict[str, float]:
    """Train for `epochs` epochs, reporting validation log-loss and accuracy after each."""
    return fit_and_report(config, trial, *data())


def make_model(config: dict[str, Any]) -> MLPClassifier:
    """The MLP a configuration describes."""
    return MLPClassifier(
        hidden_layer_sizes=(config["units"],) * config["layers"],
        activation=config["act"],
        alpha=config["alpha"],
        learning_rate_init=config["lr"],
        batch_size=config["batch_size"],
        random_state=0,
    )


def fit_and_report(
    config: dict[str, Any], trial: Trial, x_train: np.ndarray, x_val: np.ndarray, y_train: np.ndarray, y_val: np.ndarray
) -> dict[str, float]:
    """Train `config`'s MLP epoch by epoch on the training split, reporting validation log-loss and accuracy."""
    model = make_model(config)
    classes = np.unique(y_train)
    loss = acc = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for epoch in range(1, config["epochs"] + 1):
            model.partial_fit(x_train, y_train, classes=classes)
            proba = model.predict_proba(x_val)
            loss = float(log_loss(y_val, proba, labels=classes))
            acc = float(accuracy_score(y_val, classes[proba.argmax(axis=1)]))
            trial.report(epoch, val_loss=loss, val_acc=acc)
    return {"val_loss": loss, "val_acc": acc}
