"""Scores under the names users look for: MSE, RMSE, MAE and R2 for regression; accuracy, log loss, macro F1 and
ROC AUC for classification. The delivered model's on the test set (``test_mse``, ... beside ``test_score``, the
study's scorer), each trial's on its validation rows (``val_mse``, ...)."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np
from sklearn import metrics
from sklearn.base import is_classifier
from sklearn.dummy import DummyClassifier, DummyRegressor

_log = logging.getLogger(__name__)


def named_metrics(model: Any, X: Any, y: Any, prefix: str = "test_") -> dict[str, float]:
    """``{prefix}mse``, ... for a regressor, ``{prefix}accuracy``, ... for a classifier (those that apply: no
    log loss or ROC AUC without ``predict_proba``, no ROC AUC when the set holds a single class)."""
    predicted = model.predict(X)
    if not is_classifier(model):
        mse = metrics.mean_squared_error(y, predicted)
        found = {"mse": mse, "rmse": math.sqrt(mse), "mae": metrics.mean_absolute_error(y, predicted),
                 "r2": metrics.r2_score(y, predicted)}
    else:
        found = {"accuracy": metrics.accuracy_score(y, predicted),
                 "f1": metrics.f1_score(y, predicted, average="macro", zero_division=0)}
        found.update(_probabilistic(model, X, y))
    return {f"{prefix}{name}": float(value) for name, value in found.items() if math.isfinite(value)}


def _probabilistic(model: Any, X: Any, y: Any) -> dict[str, float]:
    if not hasattr(model, "predict_proba") or np.ndim(y) > 1:  # multilabel: accuracy and F1 only
        return {}
    proba, classes = np.asarray(model.predict_proba(X), dtype=np.float64), getattr(model, "classes_", None)
    proba = proba / proba.sum(axis=1, keepdims=True)  # float32 softmax rows sum to 1 only within rounding
    found = {"log_loss": metrics.log_loss(y, proba, labels=classes)}
    if len(np.unique(y)) > 1:
        scores = proba[:, 1] if proba.shape[1] == 2 else proba
        found["roc_auc"] = metrics.roc_auc_score(y, scores, multi_class="ovr", labels=classes if proba.shape[1] > 2
                                                 else None)
    return found


def validation_metrics(model: Any, X: Any, y: Any) -> dict[str, float]:
    """A trial's ``val_`` metrics on the rows it was scored on; a metric that cannot be computed there (say, a
    class missing from a small fold) leaves them all out with a note in the log, and never fails the trial."""
    try:
        return named_metrics(model, X, y, prefix="val_")
    except ValueError as exc:
        _log.info("hpsearch: no named validation metrics for this fold: %s", exc)
        return {}


def scorer_problem(scoring: str, task: str, y: Any) -> str | None:
    """Why the scikit-learn scorer ``scoring`` cannot score this task's target, else None: it is tried on a
    constant model of ``y`` (the training target), and a regression scorer is never taken for classes."""
    regression = metrics.get_scorer(scoring)._score_func.__module__.endswith("_regression")
    if regression != (task == "regression"):
        return f"it scores {'regression' if regression else 'classification'}, and the task is {task}"
    if task == "multilabel":
        return None
    rows = slice(None, 2000)  # enough rows for every class of a usual target, few enough to take no time
    X, y = np.zeros((len(y[rows]), 1)), y[rows]
    model = (DummyRegressor() if task == "regression" else DummyClassifier(strategy="stratified", random_state=0))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metrics.get_scorer(scoring)(model.fit(X, y), X, y)
    except (ValueError, TypeError, AttributeError) as exc:
        return f"on this {task} target it fails: {str(exc).strip().splitlines()[0][:200]}"
    return None


def fitting_scorers(task: str, y: Any) -> list[str]:
    """The scikit-learn scorer names that can score this task's target (see :func:`scorer_problem`)."""
    return [name for name in metrics.get_scorer_names() if scorer_problem(name, task, y) is None]
