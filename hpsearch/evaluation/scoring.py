"""What candidates are scored with: one scorer, or several (scikit-learn's multi-metric scoring), the one the search
optimises among them, and whether training scores are measured too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import is_classifier
from sklearn.metrics import check_scoring, get_scorer, get_scorer_names
from sklearn.metrics._scorer import _check_multimetric_scoring, _MultimetricScorer
from sklearn.utils.multiclass import type_of_target

from hpsearch.errors import did_you_mean
from hpsearch.evaluation.metrics import fitting_scorers, scorer_problem

SINGLE = "score"  # the one metric's name in ``cv_results_`` keys (``mean_test_score``), as in scikit-learn


@dataclass
class Scoring:
    """Named scorers, and ``primary``: the one the search optimises, ranks trials by and delivers the best of.

    ``label`` is how studies name the primary scorer (``neg_mean_squared_error``, a callable's name).
    ``train``: also score each fold's training rows (scikit-learn's ``return_train_score``).
    """

    scorers: dict[str, Any]
    primary: str = SINGLE
    label: str = SINGLE
    train: bool = False

    @property
    def multimetric(self) -> bool:
        return list(self.scorers) != [SINGLE]

    @property
    def scorer(self) -> Any:
        return self.scorers[self.primary]

    def __call__(self, model: Any, X: Any, y: Any) -> dict[str, float]:
        """Every metric of ``model`` on (X, y) by name (predictions shared between the scorers)."""
        if not self.multimetric:
            return {SINGLE: float(self.scorer(model, X, y))}
        return {name: float(value) for name, value in
                _MultimetricScorer(scorers=self.scorers, raise_exc=True)(model, X, y).items()}


def named_scoring(scoring: str) -> Scoring:
    """A study file's ``search.scoring``: one scikit-learn scorer by name."""
    return Scoring({SINGLE: get_scorer(scoring)}, label=scoring)


def estimator_scoring(estimator: Any, scoring: Any, refit: Any, train: bool = False, y: Any = None) -> Scoring:
    """``scoring`` and ``refit`` as ``GridSearchCV`` takes them: a name, a callable or None (the estimator's own
    ``score``); or a list/tuple/dict of several, where ``refit`` names the one to optimise (a callable ``refit``, or
    ``False``: the first one named). Refuses what ``GridSearchCV`` refuses, in its words, and a scorer name that
    does not exist or cannot score the target ``y``."""
    names = [scoring] if isinstance(scoring, str) else list(scoring.values()) if isinstance(scoring, dict) else \
        list(scoring) if isinstance(scoring, (list, tuple, set)) else []
    for name in (name for name in names if isinstance(name, str)):
        _check_name(name, is_classifier(estimator), y)
    if scoring is None or isinstance(scoring, str) or callable(scoring):
        scorer = check_scoring(estimator, scoring=scoring)
        label = scoring if isinstance(scoring, str) else getattr(scoring, "__name__", type(scoring).__name__) \
            if scoring is not None else "accuracy" if is_classifier(estimator) else "r2"  # what ``score`` computes
        return Scoring({SINGLE: scorer}, label=label, train=train)
    scorers = _check_multimetric_scoring(estimator, scoring)
    if refit is not False and not callable(refit) and not (isinstance(refit, str) and refit in scorers):
        raise ValueError("For multi-metric scoring, the parameter refit must be set to a scorer key or a callable to "
                         "refit an estimator with the best parameter setting on the whole data and make the best_* "
                         f"attributes available for that metric. If this is not needed, refit should be set to False "
                         f"explicitly. {refit!r} was passed.")
    primary = refit if isinstance(refit, str) else next(iter(scorers))
    return Scoring(scorers, primary=primary, label=primary, train=train)


def _check_name(name: str, classifier: bool, y: Any) -> None:
    """Refuse a scorer name scikit-learn does not know, or one that cannot score this target."""
    if name not in get_scorer_names():
        raise ValueError(f"scoring: {name!r} is not a scikit-learn scorer{did_you_mean(name, get_scorer_names())}")
    if y is None:
        return
    target = type_of_target(y)
    task = "regression" if not classifier else "multilabel" if target.startswith("multilabel") else \
        "binary" if target == "binary" else "multiclass"
    problem = scorer_problem(name, task, np.asarray(y))
    if problem:
        raise ValueError(f"scoring: {name!r} cannot score this estimator's target: {problem}; those that can: "
                         f"{', '.join(fitting_scorers(task, np.asarray(y)))}")
