"""Evaluate one candidate: fit it on every fold (or the holdout split), score it, track it.

This is the "tuner" half of KerasTuner's oracle/tuner split: strategies only propose params and
hear back :class:`~hpsearch.results.TrialResult` objects (scikit-learn's ``evaluate_candidates``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from sklearn.base import is_classifier
from sklearn.metrics import get_scorer
from sklearn.model_selection import check_cv

from hpsearch.config import StudyConfig
from hpsearch.data import Dataset
from hpsearch.errors import DataError
from hpsearch.models.backend import fresh_session
from hpsearch.models.callbacks import fit_callbacks
from hpsearch.models.estimator import assemble, make_estimator, make_preprocessor
from hpsearch.results import PruningReporter, TrialObserver, TrialResult

DEFAULT_SCORING = {"regression": "neg_mean_squared_error", "binary": "accuracy",
                   "multiclass": "accuracy", "multilabel": "accuracy"}


class TrialFailed(Exception):  # noqa: N818  (reads well in a failure reason: "TrialFailed: the loss became NaN")
    """A trial that ran but produced no usable model (e.g. its loss became NaN)."""


def scoring_for(study: StudyConfig, task: str) -> str:
    """The scikit-learn scorer name in force (the study's, else a default by task)."""
    return study.search.scoring or DEFAULT_SCORING[task]


class Evaluator:
    """Fits, scores and records candidates of one study on one dataset."""

    def __init__(self, study: StudyConfig, data: Dataset, factory: Any, tracker: Any, observer: TrialObserver) -> None:
        self.study, self.data, self.factory = study, data, factory
        self.tracker, self.observer = tracker, observer
        self.scoring = scoring_for(study, data.task)
        self._scorer = get_scorer(self.scoring)
        self.fixed = dict(study.model.params)
        self.folds = self._folds()

    def _folds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(train, test) index pairs into X_train; holdout mode has no folds (an empty list)."""
        cv = self.study.search.cv
        if cv is None:
            return []
        y = self.data.y_train
        if len(y) < cv:
            raise DataError(f"search.cv={cv} folds but the training split has only {len(y)} rows")
        classifier = is_classifier(self.new_estimator({}))
        if classifier and self.data.task in ("binary", "multiclass"):
            smallest = int(np.unique(y, return_counts=True)[1].min())
            if smallest < cv:
                raise DataError(f"search.cv={cv} folds but the rarest class has only {smallest} training rows; "
                                "lower search.cv or use a holdout split (search.cv: null)")
        splitter = check_cv(cv, y, classifier=classifier)
        return list(splitter.split(self.data.X_train, y))

    @property
    def n_folds(self) -> int:
        return max(len(self.folds), 1)

    def new_estimator(self, params: dict[str, Any]) -> Any:
        """An unfitted estimator for ``params`` on top of the study's fixed params."""
        return make_estimator(self.factory, self.data.task, {**self.fixed, **params}, self.study.training)

    def fit(self, params: dict[str, Any], X: np.ndarray, y: np.ndarray, validation: tuple | None,
            seed: int, hook: Any = None) -> Any:
        """Fit one model (scaler fitted on ``X`` only) and return the assembled, fitted pipeline."""
        fresh_session(seed)
        preprocessor = make_preprocessor(self.study.data.scale)
        if preprocessor is not None:
            X = preprocessor.fit_transform(X)
            if validation is not None:
                validation = (preprocessor.transform(validation[0]), validation[1])
        estimator = self.new_estimator(params)
        callbacks = fit_callbacks(self.study.training, hook or (lambda epoch, logs: False), validation is not None)
        estimator.fit(X, y, validation_data=validation, callbacks=callbacks)
        losses = estimator.history_.get("loss", [])
        if any(not math.isfinite(v) for v in losses):
            raise TrialFailed(f"the loss became NaN/inf at epoch {len(losses)} (learning rate too high?)")
        return assemble(preprocessor, estimator)

    def score(self, model: Any, X: np.ndarray, y: np.ndarray) -> float:
        value = float(self._scorer(model, X, y))
        if not math.isfinite(value):
            raise TrialFailed(f"the {self.scoring} score is {value}")
        return value

    def _fold_data(self, fold: int) -> tuple[np.ndarray, ...]:
        d = self.data
        if not self.folds:
            return d.X_train, d.y_train, d.X_valid, d.y_valid, d.X_valid, d.y_valid
        train, test = self.folds[fold]
        X_stop, y_stop = (d.X_valid, d.y_valid) if d.X_valid is not None else (d.X_train[test], d.y_train[test])
        return d.X_train[train], d.y_train[train], d.X_train[test], d.y_train[test], X_stop, y_stop

    def __call__(self, params: dict[str, Any], number: int, reporter: PruningReporter | None = None) -> TrialResult:
        """Evaluate one candidate; never raises for a failing model (the trial is recorded as failed)."""
        result = TrialResult(number=number, params=params)
        run = self.tracker.start_trial(number, params)
        result.run_id = run.run_id
        self.observer.trial_started(number, self.n_folds, self.study.training.epochs)
        started, first_model = time.perf_counter(), None
        try:
            for fold in range(self.n_folds):
                X_fit, y_fit, X_test, y_test, X_stop, y_stop = self._fold_data(fold)
                hook = _CurveHook(self, run, fold, reporter)
                fit_started = time.perf_counter()
                model = self.fit(params, X_fit, y_fit, (X_stop, y_stop), self.study.seed + 7919 * number + fold, hook)
                result.fit_seconds.append(time.perf_counter() - fit_started)
                result.fold_epochs.append(hook.epochs)
                if first_model is None:
                    first_model = model
                if hook.pruned:
                    result.state, result.reason = "pruned", f"pruned at epoch {hook.epochs} of fold {fold}"
                    break
                score_started = time.perf_counter()
                result.fold_scores.append(self.score(model, X_test, y_test))
                result.score_seconds.append(time.perf_counter() - score_started)
        except Exception as exc:  # a failing candidate must not stop the study
            result.state = "failed"
            result.reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            first_model = None
        result.duration_s = time.perf_counter() - started
        self.tracker.end_trial(run, result, model=first_model)
        self.observer.trial_ended(result)
        return result


class _CurveHook:
    """Per-epoch: curves to the tracker, progress to the observer, intermediate values to the pruner."""

    def __init__(self, evaluator: Evaluator, run: Any, fold: int, reporter: PruningReporter | None) -> None:
        self.evaluator, self.run, self.fold, self.reporter = evaluator, run, fold, reporter
        self.prefix = f"fold{fold}/" if evaluator.folds else ""
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
        step = self.fold * self.evaluator.study.training.epochs + epoch
        self.pruned = self.reporter.should_prune(-monitored, step)
        return self.pruned
