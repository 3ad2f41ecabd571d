"""The delivered model as an ensemble of trial models: greedy ensemble selection (Caruana et al., 2004).

Members are added one at a time, with replacement, each the trial model that most improves the
ensemble's score on the validation split; the number of times a model is chosen is its weight. The
shortest prefix with the best score is kept, so the first pick being the best single model, the
ensemble never scores below the best trial on the validation split. The result is scikit-learn's own
``VotingRegressor`` (averaging) or soft ``VotingClassifier`` over the trials' fitted models, frozen
(``sklearn.frozen.FrozenEstimator``): ``mlflow.sklearn`` and :func:`hpsearch.load_best` see one fitted
estimator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.ensemble import VotingClassifier, VotingRegressor
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import get_scorer


@dataclass
class Selection:
    """The chosen ensemble: its estimator, each member trial's weight, its validation score."""

    estimator: Any
    weights: dict[int, int]  # trial number -> times chosen
    score: float


def select_ensemble(pool: list[tuple[int, Any]], X_valid: Any, y_valid: Any, scoring: Any, size: int) -> Selection:
    """Greedy selection of at most ``size`` picks from ``pool`` ((trial number, fitted model), best first), scored by
    ``scoring`` (a scorer's name or the scorer)."""
    scorer = get_scorer(scoring)
    classifier = is_classifier(pool[0][1])
    outputs = [_output(model, X_valid, classifier) for _, model in pool]
    classes = getattr(pool[0][1], "classes_", None)
    picks: list[int] = []
    total = np.zeros_like(outputs[0])
    best_score, best_picks = -math.inf, []
    for _ in range(size):
        scores = [_score(scorer, (total + out) / (len(picks) + 1), classes, X_valid, y_valid) for out in outputs]
        pick = int(np.argmax(scores))
        picks.append(pick)
        total = total + outputs[pick]
        if scores[pick] > best_score:
            best_score, best_picks = scores[pick], list(picks)
    counts = {i: best_picks.count(i) for i in dict.fromkeys(best_picks)}
    members = [(f"trial_{pool[i][0]}", FrozenEstimator(pool[i][1])) for i in counts]
    voting = (VotingClassifier(members, voting="soft", weights=list(counts.values())) if classifier
              else VotingRegressor(members, weights=list(counts.values())))
    voting.fit(X_valid, y_valid)  # frozen members: fitting only records the classes and the members
    return Selection(voting, {pool[i][0]: n for i, n in counts.items()}, best_score)


def _output(model: Any, X: Any, classifier: bool) -> np.ndarray:
    """What the ensemble averages: class probabilities (soft voting) or predictions."""
    return np.asarray(model.predict_proba(X) if classifier else model.predict(X), dtype=np.float64)


def _score(scorer: Any, output: np.ndarray, classes: Any, X: Any, y: Any) -> float:
    """The study's scorer on an averaged output, without predicting again."""
    model = _Averaged(output) if classes is None else _AveragedClassifier(output, classes)
    value = float(scorer(model, X, y))
    return value if math.isfinite(value) else -math.inf


class _Averaged(RegressorMixin, BaseEstimator):
    """A stand-in estimator answering with precomputed averaged predictions (for the scorer only)."""

    def __init__(self, output: np.ndarray) -> None:
        self.output = output
        self.fitted_ = True

    def predict(self, X: Any) -> np.ndarray:
        return self.output


class _AveragedClassifier(ClassifierMixin, BaseEstimator):
    """A stand-in classifier answering with precomputed averaged class probabilities (for the scorer only)."""

    def __init__(self, output: np.ndarray, classes: Any) -> None:
        self.output, self.classes = output, classes
        self.classes_ = np.asarray(classes)

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.output

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.output, axis=1)]
