"""``hpsearch.SearchCV``: the study runner as a scikit-learn meta-estimator (the Python door).

It runs :func:`hpsearch.run.search.run_search`, the engine the CLI uses, with the same strategies and
the same MLflow layout; only the candidates are clones of the user's estimator (often a pipeline)
instead of a study file's factory.
"""

from __future__ import annotations

import time
from copy import deepcopy
from typing import Any

import joblib
import numpy as np
import pandas as pd
import yaml
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone, is_classifier
from sklearn.metrics import check_scoring
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from hpsearch.config.loading import parse_search
from hpsearch.config.schema import tracking_uri
from hpsearch.errors import did_you_mean
from hpsearch.evaluation.budget import Budget
from hpsearch.evaluation.evaluator import Evaluator
from hpsearch.evaluation.fitting import EstimatorFitter, keras_step
from hpsearch.evaluation.folds import Splits, make_folds
from hpsearch.models.backend_choice import running_backend, use_backend
from hpsearch.results import DataSplits, NoObserver, cv_results
from hpsearch.run.search import run_search
from hpsearch.space.dimensions import as_dimension
from hpsearch.space.space import SearchSpace
from hpsearch.strategies import make_strategy
from hpsearch.tracking.base import NullTracker


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
    strategy : {"random", "grid", "optuna"}, default "random"
        The chapter's ``RandomizedSearchCV``, ``GridSearchCV`` or Optuna's ask/tell with pruning.
    n_trials : int, default 10
        Candidates to evaluate (grid: every combination instead).
    cv : int or cross-validation generator, default 3
        Folds, as in scikit-learn (stratified for classifiers).
    scoring : str, optional
        A scikit-learn scorer name; None scores with the estimator's own ``score`` (R2 for regressors,
        accuracy for classifiers), as scikit-learn's searches do.
    refit : bool, default True
        Refit the best params on all of ``X`` (``best_estimator_``).
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
    timeout : float, optional
        Seconds of searching; the trial running at the deadline is stopped and recorded as such.
    patience : int, optional
        Stop after this many finished trials without improving the best score by more than ``min_delta``.
    min_delta : float, default 0.0
        See ``patience``.
    backend : {"tensorflow", "jax", "torch"}, optional
        Checks that Keras runs on that backend. It is fixed when Keras is first imported: call
        ``hpsearch.use_backend("jax")``, or set ``KERAS_BACKEND``, before importing hpsearch's estimators.

    Attributes
    ----------
    best_params_ : dict
        The best trial's params.
    best_score_ : float
        Its mean score over folds (greater is better).
    best_estimator_ : estimator
        The best params refitted on all the data (``refit=True``).
    cv_results_ : dict
        Every trial in scikit-learn's format (failed and pruned trials score NaN and rank last).
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

    def __init__(self, estimator: Any, space: dict[str, Any], *, strategy: str = "random", n_trials: int = 10,
                 cv: Any = 3, scoring: str | None = None, refit: bool = True, experiment: str = "hpsearch",
                 tracking: bool = True, tracking_uri: str | None = None, log_models: bool = True,
                 random_state: int | None = 42, sampler: str = "tpe", pruner: str = "none",
                 storage: str | None = None, grid_points: int = 3, timeout: float | None = None,
                 patience: int | None = None, min_delta: float = 0.0, backend: str | None = None) -> None:
        self.estimator, self.space, self.strategy, self.n_trials = estimator, space, strategy, n_trials
        self.timeout, self.patience, self.min_delta, self.backend = timeout, patience, min_delta, backend
        self.cv, self.scoring, self.refit, self.experiment = cv, scoring, refit, experiment
        self.tracking, self.tracking_uri, self.log_models = tracking, tracking_uri, log_models
        self.random_state, self.sampler, self.pruner = random_state, sampler, pruner
        self.storage, self.grid_points = storage, grid_points

    # -- validation: everything the user can get wrong is refused before any training ------------

    def _search_space(self) -> SearchSpace:
        if not isinstance(self.space, dict) or not self.space:
            raise ValueError("space must be a non-empty dict of parameter name -> range, list or distribution")
        space = SearchSpace({str(k): as_dimension(v) for k, v in self.space.items()})
        space.check_strategy(self.strategy)
        accepted = _settable_names(self.estimator)
        for name, value in zip(space.dimensions, _one_candidate(space)):
            try:
                clone(self.estimator).set_params(**{name: value})
            except (ValueError, TypeError):
                raise ValueError(f"space key {name!r} is not a parameter of {type(self.estimator).__name__}"
                                 f"{did_you_mean(name, accepted)}. Inside a pipeline, name the step: "
                                 "'step__param'.") from None
        return space

    def _check_data(self, X: Any, y: Any) -> None:
        n_rows = len(X) if hasattr(X, "__len__") else np.shape(X)[0]
        if y is None or len(y) != n_rows:
            raise ValueError(f"X has {n_rows} rows but y has {None if y is None else len(y)}; both are required")
        if n_rows < 2:
            raise ValueError(f"X has {n_rows} row(s): a search needs at least one row per fold")
        model_input = X
        if isinstance(self.estimator, Pipeline) and len(self.estimator) > 1:
            model_input = clone(self.estimator[:-1]).fit_transform(X, y)  # what the Keras model will see
        _check_numeric(model_input, "after the pipeline's preprocessing" if model_input is not X else "")
        if pd.isna(np.asarray(y, dtype=object)).any():
            raise ValueError("y contains missing values (NaN/None): drop or fill those rows first")

    # -- fitting ------------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> SearchCV:
        """Run the search on (X, y), refit the best candidate on all of it, record it all.

        ``sample_weight`` weighs the training rows (of every fold, and of the refit).
        """
        space = self._search_space()
        self._check_data(X, y)
        search = parse_search({"strategy": self.strategy, "n_trials": self.n_trials, "cv": None,
                               "scoring": self.scoring, "sampler": self.sampler, "pruner": self.pruner,
                               "storage": self.storage, "grid_points": self.grid_points, "timeout": self.timeout,
                               "patience": self.patience, "min_delta": self.min_delta})
        if self.backend is not None:  # Keras is loaded with the estimator: this checks that it runs on the one asked
            use_backend(self.backend, field="backend")
        seed = self.random_state if self.random_state is not None else int(np.random.randint(2**31 - 1))
        strategy = make_strategy(search, space, seed, self.experiment)
        folds = make_folds(X, y, self.cv, is_classifier(self.estimator))
        fitter = EstimatorFitter(self.estimator)
        self.scorer_ = check_scoring(self.estimator, scoring=self.scoring)
        scoring = self.scoring or ("accuracy" if is_classifier(self.estimator) else "r2")
        tracker = self._tracker()
        wrapper, _ = keras_step(self.estimator)
        if sample_weight is not None and len(sample_weight) != len(y):
            raise ValueError(f"sample_weight has {len(sample_weight)} values for {len(y)} rows")
        evaluator = Evaluator(Splits(X, y, folds, sample_weight=sample_weight), fitter, scoring, tracker, NoObserver(),
                              seed, int(getattr(wrapper, "epochs", 1) or 1),
                              budget=Budget(search.timeout, search.patience, search.min_delta))
        refit_seconds: list[float] = []

        def refit(params: dict[str, Any], seed_offset: int) -> Any:
            started = time.perf_counter()
            model = fitter(params, X, y, None, seed + seed_offset, lambda epoch, logs: False,
                           sample_weight=sample_weight)
            refit_seconds.append(time.perf_counter() - started)
            return model

        result = run_search(self.experiment, strategy, evaluator, tracker, self._study_params(space, X, y, seed),
                            self._describe(space), refit if self.refit else None,
                            datasets=DataSplits(self.experiment, None, {"training": (X, y)}, trial_roles=("training",)))
        if result.best is None:
            reasons = "; ".join(f"{r} (x{n})" for r, n in result.failure_counts().items())
            raise ValueError(f"every one of the {len(result.trials)} candidates failed: {reasons}")
        self._set_results(result, strategy, len(folds), refit_seconds)
        return self

    def _tracker(self) -> Any:
        if not self.tracking:
            return NullTracker()
        from hpsearch.tracking.mlflow_tracker import MlflowTracker

        return MlflowTracker(tracking_uri(self.tracking_uri), self.experiment, self.log_models)

    def _study_params(self, space: SearchSpace, X: Any, y: Any, seed: int) -> dict[str, Any]:
        return {"strategy": self.strategy, "n_trials": self.n_trials, "cv": repr(self.cv),
                "backend": running_backend() or "none",
                "scoring": self.scoring or "estimator default", "seed": seed,
                "estimator": type(self.estimator).__name__, "data.n_rows": len(y),
                "data.n_features": np.shape(X)[1] if np.ndim(X) > 1 else 1,
                "data.sha256": joblib.hash((X, y), hash_name="sha1"),
                **{f"space.{k}": v for k, v in space.describe().items()}}

    def _describe(self, space: SearchSpace) -> str:
        summary = {"api": "hpsearch.SearchCV", "estimator": repr(self.estimator), "space": space.describe(),
                   "strategy": self.strategy, "n_trials": self.n_trials, "cv": repr(self.cv),
                   "scoring": self.scoring, "random_state": self.random_state}
        return yaml.safe_dump(summary, sort_keys=False)

    def _set_results(self, result: Any, strategy: Any, n_splits: int, refit_seconds: list[float]) -> None:
        best = result.best
        self.cv_results_ = cv_results(result.trials, n_splits)
        self.best_index_ = result.trials.index(best)
        self.best_params_, self.best_score_ = best.params, best.score
        self.n_trials_, self.n_splits_ = len(result.trials), n_splits
        self.study_run_id_, self.experiment_id_ = result.study_run_id, result.experiment_id
        self.study_ = getattr(strategy, "study", None)
        self.multimetric_ = False
        if result.best_estimator is not None:
            self.best_estimator_ = result.best_estimator
            self.refit_time_ = refit_seconds[-1]
            for attribute in ("classes_", "n_features_in_", "feature_names_in_"):
                if hasattr(self.best_estimator_, attribute):
                    setattr(self, attribute, getattr(self.best_estimator_, attribute))

    # -- delegation to the best estimator -------------------------------------------------------------

    @available_if(_best_has("predict"))
    def predict(self, X: Any) -> Any:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict(X)

    @available_if(_best_has("predict_proba"))
    def predict_proba(self, X: Any) -> Any:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict_proba(X)

    @available_if(_best_has("transform"))
    def transform(self, X: Any) -> Any:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.transform(X)

    def score(self, X: Any, y: Any) -> float:
        """The search's scorer on (X, y) with the best estimator."""
        check_is_fitted(self, "best_estimator_")
        return float(self.scorer_(self.best_estimator_, X, y))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.estimator_type = inner.estimator_type
        tags.classifier_tags = deepcopy(inner.classifier_tags)
        tags.regressor_tags = deepcopy(inner.regressor_tags)
        tags.input_tags = deepcopy(inner.input_tags)
        tags.non_deterministic = True
        return tags


def _one_candidate(space: SearchSpace) -> list[Any]:
    """One value of every dimension (to try ``set_params`` with before any training)."""
    sample = next(iter(space.sample(1, 0)))
    return [sample[name] for name in space.dimensions]


def _settable_names(estimator: Any) -> list[str]:
    """Parameter names ``set_params`` accepts, factory arguments of a Keras wrapper included."""
    names = list(estimator.get_params(deep=True))
    wrapper, prefix = keras_step(estimator)
    if wrapper is not None and hasattr(wrapper, "_factory_params"):
        names += [prefix + name for name in wrapper._factory_params()]
    return names


def _check_numeric(X: Any, where: str) -> None:
    """Refuse data a Keras model cannot take: text/categorical columns or missing values."""
    suffix = f" {where}" if where else ""
    if isinstance(X, pd.DataFrame):
        text = [str(c) for c, dtype in X.dtypes.items() if not pd.api.types.is_numeric_dtype(dtype)]
        if text:
            raise ValueError(f"X has non-numeric columns {text}{suffix}: a Keras model needs numbers; encode "
                             "them first, e.g. OneHotEncoder in a ColumnTransformer before the model")
        values = X.to_numpy(dtype=float)
    else:
        try:
            values = np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"X holds non-numeric values{suffix}: a Keras model needs numbers; encode them "
                             "first, e.g. OneHotEncoder in a ColumnTransformer before the model") from None
    if not np.isfinite(values).all():
        raise ValueError(f"X contains missing or infinite values{suffix}: put an imputer (SimpleImputer) "
                         "before the Keras model, or clean the data")
