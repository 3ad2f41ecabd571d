"""Evaluate one candidate: fit it on every fold (or the holdout split), score it, track it.

This is the "tuner" half of KerasTuner's oracle/tuner split: strategies only propose params and
hear back :class:`~hpsearch.results.TrialResult` objects (scikit-learn's ``evaluate_candidates``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import get_scorer
from sklearn.model_selection import check_cv
from sklearn.utils import _safe_indexing
from sklearn.utils.multiclass import type_of_target

from hpsearch.errors import DataError
from hpsearch.fitting import Fitter, TrialFailed
from hpsearch.results import PruningReporter, TrialObserver, TrialResult

DEFAULT_SCORING = {"regression": "neg_mean_squared_error", "binary": "accuracy",
                   "multiclass": "accuracy", "multilabel": "accuracy"}


@dataclass
class Splits:
    """Where candidates train and are scored: CV folds over (X, y), or (no folds) the holdout set.

    ``X_valid``/``y_valid`` is the holdout scoring set, and with folds the early-stopping set.
    ``sample_weight`` (one weight per row of X) weighs the training rows of every fold.
    """

    X: Any
    y: Any
    folds: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    X_valid: Any = None
    y_valid: Any = None
    sample_weight: Any = None

    @property
    def n_folds(self) -> int:
        return max(len(self.folds), 1)

    def fold(self, k: int) -> tuple[Any, ...]:
        """(X_fit, y_fit, weights_fit, X_score, y_score, validation) of fold ``k``."""
        if not self.folds:
            return self.X, self.y, self.sample_weight, self.X_valid, self.y_valid, (self.X_valid, self.y_valid)
        train, test = self.folds[k]
        X_test, y_test = _safe_indexing(self.X, test), _safe_indexing(self.y, test)
        validation = (self.X_valid, self.y_valid) if self.X_valid is not None else (X_test, y_test)
        weights = None if self.sample_weight is None else _safe_indexing(self.sample_weight, train)
        return _safe_indexing(self.X, train), _safe_indexing(self.y, train), weights, X_test, y_test, validation


def make_folds(X: Any, y: Any, cv: Any, classifier: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """CV folds (stratified for classifiers), refusing data too small for them."""
    n_rows = len(y)
    n_splits = cv if isinstance(cv, int) else getattr(cv, "n_splits", 2)
    if n_rows < n_splits:
        raise DataError(f"search.cv={n_splits} folds but there are only {n_rows} training rows")
    if classifier and isinstance(cv, int) and type_of_target(y) in ("binary", "multiclass"):
        smallest = int(np.unique(np.asarray(y), return_counts=True)[1].min())
        if smallest < cv:
            raise DataError(f"search.cv={cv} folds but the rarest class has only {smallest} training rows; "
                            "lower search.cv or use a holdout split (search.cv: null)")
    return list(check_cv(cv, y, classifier=classifier).split(X, y))


class Evaluator:
    """Fits, scores and records candidates; never raises for a failing candidate."""

    def __init__(self, splits: Splits, fitter: Fitter, scoring: str, tracker: Any, observer: TrialObserver,
                 seed: int, epochs: int) -> None:
        self.splits, self.fitter, self.scoring = splits, fitter, scoring
        self._scorer = get_scorer(scoring)
        self.tracker, self.observer, self.seed, self.epochs = tracker, observer, seed, epochs

    def score(self, model: Any, X: Any, y: Any) -> float:
        value = float(self._scorer(model, X, y))
        if not math.isfinite(value):
            raise TrialFailed(f"the {self.scoring} score is {value}")
        return value

    def __call__(self, params: dict[str, Any], number: int, reporter: PruningReporter | None = None) -> TrialResult:
        """Evaluate one candidate; a failing model is recorded as a failed trial."""
        result = TrialResult(number=number, params=params)
        run = self.tracker.start_trial(number, params)
        result.run_id = run.run_id
        self.observer.trial_started(number, self.splits.n_folds, self.epochs)
        started, first_model = time.perf_counter(), None
        try:
            for fold in range(self.splits.n_folds):
                X_fit, y_fit, weights, X_score, y_score, validation = self.splits.fold(fold)
                hook = _CurveHook(self, run, fold, reporter)
                fit_started = time.perf_counter()
                model = self.fitter(params, X_fit, y_fit, validation, self.seed + 7919 * number + fold, hook,
                                    sample_weight=weights)
                result.fit_seconds.append(time.perf_counter() - fit_started)
                result.fold_epochs.append(hook.epochs)
                if first_model is None:
                    first_model = model
                if hook.pruned:
                    result.state, result.reason = "pruned", f"pruned at epoch {hook.epochs} of fold {fold}"
                    break
                score_started = time.perf_counter()
                result.fold_scores.append(self.score(model, X_score, y_score))
                result.score_seconds.append(time.perf_counter() - score_started)
        except Exception as exc:  # a failing candidate must not stop the study
            message = str(exc).strip()
            result.state, first_model = "failed", None
            result.reason = f"{type(exc).__name__}: {message.splitlines()[0] if message else ''}"
        result.duration_s = time.perf_counter() - started
        self.tracker.end_trial(run, result, model=first_model)
        self.observer.trial_ended(result)
        return result


class _CurveHook:
    """Per-epoch: curves to the tracker, progress to the observer, intermediate values to the pruner."""

    def __init__(self, evaluator: Evaluator, run: Any, fold: int, reporter: PruningReporter | None) -> None:
        self.evaluator, self.run, self.fold, self.reporter = evaluator, run, fold, reporter
        self.prefix = f"fold{fold}/" if evaluator.splits.folds else ""
        self.epochs, self.pruned = 0, False

    def __call__(self, epoch: int, logs: dict[str, float]) -> bool:
        self.epochs = epoch + 1
        self.run.log_metrics({self.prefix + k: v for k, v in logs.items()}, step=epoch)
        self.evaluator.observer.epoch_ended(self.fold, epoch, logs)
        if self.reporter is None:
            return False
        monitored = logs.get("val_loss", logs.get("loss", math.nan))
        if not math.isfinite(monitored):
            return False
        step = self.fold * self.evaluator.epochs + epoch
        self.pruned = self.reporter.should_prune(-monitored, step)
        return self.pruned
