"""``hpsearch.SearchCV``: the study runner as a scikit-learn meta-estimator (the Python door).

It runs :func:`hpsearch.run.search.run_search`, the engine the CLI uses, with the same strategies and
the same MLflow layout; only the candidates are clones of the user's estimator (often a pipeline)
instead of a study file's factory.
"""

from __future__ import annotations

import warnings
from copy import deepcopy
from typing import Any

import joblib
import numpy as np
import yaml
from sklearn.base import BaseEstimator, MetaEstimatorMixin, is_classifier
from sklearn.exceptions import FitFailedWarning
from sklearn.utils import get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import _get_feature_names, check_is_fitted

from hpsearch.config.loading import parse_search
from hpsearch.config.schema import ExecutionConfig
from hpsearch.evaluation.fitting import keras_step
from hpsearch.evaluation.folds import Splits
from hpsearch.evaluation.scoring import Scoring, estimator_scoring
from hpsearch.models.backend_choice import running_backend, use_backend
from hpsearch.results import cv_results
from hpsearch.run.search_cv_inputs import (
    check_data,
    checked_error_score,
    checked_space,
    cv_splits,
    execution_of,
    metadata_router,
    n_trials_of,
    routed_params,
)
from hpsearch.run.search_cv_job import SearchJob, run_workers, shared_storage
from hpsearch.space.space import SearchSpace

FINALS = ("refit", "best_trial", "ensemble")


def _best_has(method: str) -> Any:
    def check(self: SearchCV) -> bool:
        fitted = getattr(self, "best_estimator_", None)
        return hasattr(fitted if fitted is not None else self.estimator, method)

    return check


class SearchCV(MetaEstimatorMixin, BaseEstimator):
    """Search ``space`` for ``estimator`` with random, grid or Optuna search, tracked in MLflow.

    The study runner of ``hpsearch run`` as a scikit-learn meta-estimator: it fits inside pipelines,
    ``cross_val_score`` and ``clone`` like ``RandomizedSearchCV``, and records the study like a study file does.

    Parameters
    ----------
    estimator : estimator
        What is searched: a scikeras wrapper (``hpsearch.KerasRegressor``, ``KerasMLPRegressor``, ...) or a
        pipeline ending in one.
    space : dict
        Parameter names (``n_hidden``, or ``step__param`` inside a pipeline) mapped to
        ``hpsearch.Int/Float/Categorical``, scipy distributions (``reciprocal(3e-4, 3e-2)``) or lists
        (``np.arange(1, 100)``).
    strategy : {"random", "grid", "optuna", "halving"}, default "random"
        The chapter's ``RandomizedSearchCV``, ``GridSearchCV``, Optuna's ask/tell with pruning, or successive
        halving over random candidates with epochs as the resource (``HalvingRandomSearchCV``'s approach: each
        round keeps the best 1/``halving_factor`` and trains them ``halving_factor`` times longer, up to the
        estimator's ``epochs``; each (candidate, round) is a trial, its epochs among its params).
    n_trials : int, default 10
        Candidates to evaluate (grid: every combination instead).
    n_iter : int, optional
        ``RandomizedSearchCV``'s name for ``n_trials``.
    cv : int, cross-validation generator or iterable, default 3
        As in scikit-learn: a number of folds (stratified for classifiers), a splitter (``KFold``, ``GroupKFold``,
        ``TimeSeriesSplit``, ``ShuffleSplit``, ``PredefinedSplit``...) or (train, test) index pairs. One split is a
        holdout (what ``final="ensemble"`` chooses its members on).
    scoring : str, callable, list, tuple or dict, optional
        As in ``GridSearchCV``: a scorer name, a callable ``scorer(estimator, X, y)``, or several (multi-metric:
        every one is recorded, ``refit`` names the one the search optimises). None: the estimator's own ``score``
        (R2 for regressors, accuracy for classifiers).
    refit : bool, str or callable, default True
        As in ``GridSearchCV``: refit the best params on all of ``X`` (``best_estimator_``); with several metrics,
        the metric's name that picks the best; a callable takes ``cv_results_`` and returns the best index.
    n_jobs : int, optional
        Processes that fit at once (-1: every core). Random and grid searches run their (candidate, fold) fits in
        parallel; Optuna runs ``n_jobs`` workers on one storage (``storage``, else a temporary SQLite file). None:
        what an enclosing ``joblib.parallel_config`` / ``parallel_backend("dask")`` asks for, else one.
    execution : dict, optional
        A study file's ``execution`` section (``{"backend": "dask", "address": "tcp://host:8786"}``), for random
        and grid searches.
    error_score : 'raise' or float, default np.nan
        The score of a candidate whose fit fails (a ``FitFailedWarning`` says how many did); ``'raise'`` raises its
        error instead.
    return_train_score : bool, default False
        Also score every fold's training rows (``mean_train_score``... in ``cv_results_``).
    verbose : int, default 0
        0: quiet; 1: progress bars; 2: one line per trial.
    experiment : str, default "hpsearch"
        The MLflow experiment the study is recorded in.
    tracking : bool, default True
        False keeps everything in memory (no MLflow).
    tracking_uri : str, optional
        Default: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` here.
    log_models : bool, default True
        Log every trial's fitted model with its trial run.
    random_state : int, optional, default 42
        Seeds the candidates and the training.
    sampler : {"tpe", "random", "cmaes", "qmc"}, default "tpe"
        Optuna's sampler (``strategy="optuna"``).
    pruner : {"none", "median", "successive_halving", "hyperband"}, default "none"
        Optuna's pruner, fed the validation loss per epoch (none by default, as in study files: letting every
        trial finish delivered better models than Hyperband's pruning, benchmarks/RESULTS.md).
    storage : str, optional
        An Optuna storage or fold-ledger URL (``sqlite:///optuna.db``, ``postgresql://...``): a re-run resumes.
    grid_points : int, default 3
        Values per numeric range for ``strategy="grid"``.
    halving_factor : int, default 3
        See ``strategy="halving"``.
    timeout : float, optional
        Seconds of searching; the trial running at the deadline is stopped and recorded as such.
    patience : int, optional
        Stop after this many finished trials without improving the best score by more than ``min_delta``.
    min_delta : float, default 0.0
        See ``patience``.
    backend : {"tensorflow", "jax", "torch"}, optional
        Checks that Keras runs on that backend. It is fixed when Keras is first imported: call
        ``hpsearch.use_backend("jax")``, or set ``KERAS_BACKEND``, before importing hpsearch's estimators.
    final : {"refit", "best_trial", "ensemble"}, default "refit"
        The delivered ``best_estimator_``: the best params refitted on all of ``X``; the best trial's own model (of
        its first fold); or the greedy ensemble of the ``ensemble_size`` best trials' models, chosen on the
        holdout rows (``cv`` with one split).
    ensemble_size : int, default 5
        See ``final``.

    Attributes
    ----------
    best_params_ : dict
        The best trial's params.
    best_score_ : float
        Its mean score over folds (greater is better; not with a callable ``refit``).
    best_index_ : int
        Its index in ``cv_results_``.
    best_estimator_ : estimator
        The delivered model (``final``; not with ``refit=False``).
    cv_results_ : dict
        Every trial in scikit-learn's format, per metric (failed trials score ``error_score``, pruned ones NaN;
        NaN ranks last).
    scorer_ : callable or dict
        The scorer (or, multi-metric, the dict of scorers).
    multimetric_ : bool
        Whether ``scoring`` named several metrics.
    n_splits_ : int
        The cross-validation splits.
    refit_time_ : float
        Seconds the delivered model's refit took.
    n_features_in_, feature_names_in_, classes_
        The delivered model's.
    n_trials_ : int
        Trials evaluated.
    study_ : optuna.Study or None
        The Optuna study (``strategy="optuna"``).
    study_run_id_ : str or None
        The MLflow study run (None with ``tracking=False``).

    See Also
    --------
    KerasMLPRegressor, KerasMLPClassifier : the chapter's MLP as estimators to search.
    load_best : the refit best model of a recorded study, in a later session.

    Examples
    --------
    >>> import hpsearch
    >>> from sklearn.datasets import load_breast_cancer
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> search = hpsearch.SearchCV(
    ...     hpsearch.KerasMLPClassifier(epochs=20, early_stopping=5),
    ...     space={"n_neurons": hpsearch.Int(8, 64), "learning_rate": hpsearch.Float(1e-3, 3e-2, log=True)},
    ...     strategy="optuna", n_trials=4, cv=3, experiment="breast-cancer")
    >>> search.fit(X, y)  # doctest: +SKIP
    >>> search.best_params_  # doctest: +SKIP
    {'n_neurons': 41, 'learning_rate': 0.0071...}
    """

    def __init__(self, estimator: Any, space: dict[str, Any], *, strategy: str = "random",
                 n_trials: int | None = None, n_iter: int | None = None, cv: Any = 3, scoring: Any = None,
                 refit: Any = True, n_jobs: int | None = None, execution: dict[str, Any] | None = None,
                 error_score: Any = np.nan, return_train_score: bool = False, verbose: int = 0,
                 experiment: str = "hpsearch", tracking: bool = True, tracking_uri: str | None = None,
                 log_models: bool = True, random_state: int | None = 42, sampler: str = "tpe", pruner: str = "none",
                 storage: str | None = None, grid_points: int = 3, halving_factor: int = 3,
                 timeout: float | None = None,
                 patience: int | None = None, min_delta: float = 0.0, backend: str | None = None,
                 final: str = "refit", ensemble_size: int = 5) -> None:
        self.estimator, self.space, self.strategy = estimator, space, strategy
        self.n_trials, self.n_iter = n_trials, n_iter
        self.cv, self.scoring, self.refit, self.n_jobs, self.execution = cv, scoring, refit, n_jobs, execution
        self.error_score, self.return_train_score, self.verbose = error_score, return_train_score, verbose
        self.experiment, self.tracking = experiment, tracking
        self.tracking_uri, self.log_models = tracking_uri, log_models
        self.random_state, self.sampler, self.pruner = random_state, sampler, pruner
        self.storage, self.grid_points, self.halving_factor = storage, grid_points, halving_factor
        self.timeout, self.patience, self.min_delta, self.backend = timeout, patience, min_delta, backend
        self.final, self.ensemble_size = final, ensemble_size

    # -- validation: everything the user can get wrong is refused before any training ------------

    def _settings(self) -> tuple[Any, SearchSpace, ExecutionConfig, Any]:
        """(search settings, space, execution, error_score), checked."""
        space = checked_space(self.estimator, self.space, self.strategy)
        if self.final not in FINALS:
            raise ValueError(f"final must be one of {', '.join(FINALS)}, got {self.final!r}")
        search = parse_search({"strategy": self.strategy, "n_trials": n_trials_of(self.n_trials, self.n_iter),
                               "cv": None, "scoring": None, "sampler": self.sampler, "pruner": self.pruner,
                               "storage": self.storage, "grid_points": self.grid_points,
                               "halving_factor": self.halving_factor, "timeout": self.timeout,
                               "patience": self.patience, "min_delta": self.min_delta,
                               "final": self.final, "ensemble_size": self.ensemble_size})
        return search, space, execution_of(self.n_jobs, self.execution), checked_error_score(self.error_score)

    # -- fitting ------------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None, *, groups: Any = None, **params: Any) -> SearchCV:
        """Run the search on (X, y), deliver the best candidate's model (``final``), record it all.

        Parameters
        ----------
        X, y : array-like
            The training data.
        groups : array-like, optional
            Group labels for the splitter (``GroupKFold``...).
        **params
            Passed to the estimator's ``fit`` in every fold and in the refit (``epochs=``, ``callbacks=``,
            ``sample_weight=``...); those with one value per row are split with the rows. With metadata routing
            enabled, only what the estimator and splitter requested.

        Returns
        -------
        self : SearchCV
        """
        search, space, execution, error_score = self._settings()
        X, y, fit_params, groups = routed_params(self, X, y, groups, params)
        check_data(self.estimator, X, y)
        scoring = estimator_scoring(self.estimator, self.scoring, self.refit, self.return_train_score, y)
        folds = cv_splits(self.cv, X, y, groups, is_classifier(self.estimator))
        if self.final == "ensemble" and len(folds) != 1:
            raise ValueError(f"final='ensemble' chooses its members on holdout rows: give cv one split "
                             f"(ShuffleSplit(n_splits=1, test_size=0.2), PredefinedSplit), not {len(folds)}")
        if self.backend is not None:  # Keras is loaded with the estimator: this checks that it runs on the one asked
            use_backend(self.backend, field="backend")
        seed = self.random_state if self.random_state is not None else int(np.random.randint(2**31 - 1))
        study_params = self._study_params(search.n_trials, space, X, y, seed)
        if execution.parallel:
            study_params.update({"execution.backend": execution.backend, "execution.n_jobs": execution.n_jobs})
        halving = search.strategy == "halving"  # it sets each round's epochs: fit(epochs=) is the last round's
        epochs = fit_params.pop(f"{keras_step(self.estimator)[1]}epochs", None) if halving else None
        job = SearchJob(self, search, space, scoring, Splits(X, y, folds, fit_params=fit_params), seed, error_score,
                        study_params, self._describe(search.n_trials, space), epochs)
        if search.strategy == "optuna" and execution.n_jobs > 1:
            with shared_storage(search.storage) as storage:
                job.search = search.model_copy(update={"storage": storage})
                run_workers(job, execution.n_jobs)
                result, strategy, refit_seconds = job.run()
                if search.storage is None:
                    strategy.keep_in_memory()
        else:
            result, strategy, refit_seconds = job.run(execution)
        self._set_results(result, strategy, scoring, len(folds), refit_seconds, error_score, X)
        return self

    def _study_params(self, n_trials: int, space: SearchSpace, X: Any, y: Any, seed: int) -> dict[str, Any]:
        return {"strategy": self.strategy, "n_trials": n_trials, "cv": repr(self.cv),
                "backend": running_backend() or "none", "scoring": repr(self.scoring) if self.scoring is not None
                else "estimator default", "seed": seed,
                "estimator": type(self.estimator).__name__, "data.n_rows": len(y),
                "data.n_features": np.shape(X)[1] if np.ndim(X) > 1 else 1,
                "data.sha256": joblib.hash((X, y), hash_name="sha1"),
                **{f"space.{k}": v for k, v in space.describe().items()}}

    def _describe(self, n_trials: int, space: SearchSpace) -> str:
        summary = {"api": "hpsearch.SearchCV", "estimator": repr(self.estimator), "space": space.describe(),
                   "strategy": self.strategy, "n_trials": n_trials, "cv": repr(self.cv),
                   "scoring": repr(self.scoring), "refit": repr(self.refit), "random_state": self.random_state}
        return yaml.safe_dump(summary, sort_keys=False)

    def _set_results(self, result: Any, strategy: Any, scoring: Scoring, n_splits: int, refit_seconds: list[float],
                     error_score: Any, X: Any) -> None:
        failed = [t for t in result.trials if t.state == "failed"]
        if result.best is None and result.trials and len(failed) == len(result.trials):
            reasons = "; ".join(f"{r} (x{n})" for r, n in result.failure_counts().items())
            raise ValueError(f"All the {len(result.trials)} candidates failed: {reasons}. It is very likely that "
                             "your model is misconfigured. You can try to debug the error by setting "
                             "error_score='raise'.")
        if result.best is None:
            raise ValueError(f"no candidate finished ({len(result.trials)} trials, none scored: pruned or stopped by "
                             f"{result.stopped_by or 'the budget'}): allow a longer timeout or more trials")
        if failed:
            reasons = "; ".join(f"{r} (x{n})" for r, n in result.failure_counts().items())
            warnings.warn(f"{len(failed)} of the {len(result.trials)} candidates failed; their scores are set to "
                          f"error_score={error_score}: {reasons}. If these failures are not expected, you can try to "
                          "debug them by setting error_score='raise'.", FitFailedWarning, stacklevel=3)
        metrics = tuple(scoring.scorers)
        self.cv_results_ = cv_results(result.trials, n_splits, metrics, error_score, scoring.train)
        self.multimetric_ = scoring.multimetric
        self.scorer_ = scoring.scorers if scoring.multimetric else scoring.scorer
        self.n_trials_, self.n_splits_ = len(result.trials), n_splits
        self.study_run_id_, self.experiment_id_ = result.study_run_id, result.experiment_id
        self.study_ = getattr(strategy, "study", None)
        if self.refit is not False or not scoring.multimetric:
            best = result.best
            self.best_index_ = result.trials.index(best)
            self.best_params_ = best.params
            if not callable(self.refit):
                self.best_score_ = float(self.cv_results_[f"mean_test_{scoring.primary}"][self.best_index_])
        if result.best_estimator is not None:
            self.best_estimator_ = result.best_estimator
            if refit_seconds:
                self.refit_time_ = refit_seconds[-1]
            for attribute in ("classes_", "n_features_in_", "feature_names_in_"):
                if hasattr(self.best_estimator_, attribute):
                    setattr(self, attribute, getattr(self.best_estimator_, attribute))
        names = _get_feature_names(X)  # what the search saw, where the delivered model (scikeras) keeps no names
        if names is not None and not hasattr(self, "feature_names_in_"):
            self.feature_names_in_ = names

    def get_metadata_routing(self) -> Any:
        """The routing of ``fit``'s params, as ``GridSearchCV``'s: to the estimator's ``fit`` and the splitter."""
        return metadata_router(self)

    # -- delegation to the best estimator -------------------------------------------------------------

    @available_if(_best_has("predict"))
    def predict(self, X: Any) -> Any:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict(X)

    @available_if(_best_has("predict_proba"))
    def predict_proba(self, X: Any) -> Any:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict_proba(X)

    @available_if(_best_has("predict_log_proba"))
    def predict_log_proba(self, X: Any) -> Any:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict_log_proba(X)

    @available_if(_best_has("decision_function"))
    def decision_function(self, X: Any) -> Any:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.decision_function(X)

    @available_if(_best_has("transform"))
    def transform(self, X: Any) -> Any:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.transform(X)

    def score(self, X: Any, y: Any) -> float:
        """The search's scorer (multi-metric: ``refit``'s) on (X, y) with the delivered estimator."""
        check_is_fitted(self, "best_estimator_")
        scorer = self.scorer_[self.refit] if self.multimetric_ else self.scorer_
        return float(scorer(self.best_estimator_, X, y))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.estimator_type = inner.estimator_type
        tags.classifier_tags = deepcopy(inner.classifier_tags)
        tags.regressor_tags = deepcopy(inner.regressor_tags)
        tags.input_tags = deepcopy(inner.input_tags)
        tags.non_deterministic = True
        return tags
