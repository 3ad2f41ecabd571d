"""The delivered model's test result under the names users look for: MSE, RMSE, MAE and R2 for regression;
accuracy, log loss, macro F1 and ROC AUC for classification (beside ``test_score``, the study's scorer)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn import metrics
from sklearn.base import is_classifier


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
