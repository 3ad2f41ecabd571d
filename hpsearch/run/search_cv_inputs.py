"""What ``hpsearch.SearchCV`` takes as scikit-learn's searches take it, checked before any training: the number
of trials (``n_iter``), ``error_score``, ``n_jobs`` and ``execution``, fit params and groups (metadata routing
when it is enabled), and the cross-validation splits."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import check_cv
from sklearn.pipeline import Pipeline
from sklearn.utils import indexable
from sklearn.utils.metadata_routing import MetadataRouter, MethodMapping, _routing_enabled, process_routing
from sklearn.utils.validation import _check_method_params, _num_samples

from hpsearch.config.loading import parse_execution
from hpsearch.config.schema import ExecutionConfig
from hpsearch.errors import did_you_mean
from hpsearch.evaluation.execution import ambient_execution
from hpsearch.evaluation.fitting import keras_step
from hpsearch.space.dimensions import as_dimension
from hpsearch.space.space import SearchSpace

DEFAULT_TRIALS = 10


def n_trials_of(n_trials: int | None, n_iter: int | None) -> int:
    """``n_trials``, or ``n_iter`` (``RandomizedSearchCV``'s name for it); both given, they must agree."""
    if n_trials is not None and n_iter is not None and n_trials != n_iter:
        raise ValueError(f"n_iter={n_iter} and n_trials={n_trials} are the same setting (n_iter is "
                         "RandomizedSearchCV's name for it): give one")
    chosen = n_trials if n_trials is not None else n_iter if n_iter is not None else DEFAULT_TRIALS
    if not isinstance(chosen, numbers.Integral) or isinstance(chosen, bool) or chosen < 1:
        raise ValueError(f"n_trials (or n_iter) must be a positive integer, got {chosen!r}")
    return int(chosen)


def checked_error_score(error_score: Any) -> Any:
    """``'raise'`` or a number (NaN by default), as ``GridSearchCV`` accepts it."""
    if error_score == "raise" or isinstance(error_score, numbers.Real) and not isinstance(error_score, bool):
        return error_score
    raise ValueError("error_score must be the string 'raise' or a numeric value. (Hint: if using 'raise', please "
                     f"make sure that it has been spelled correctly.) Got {error_score!r}")


def execution_of(n_jobs: int | None, execution: Any) -> ExecutionConfig:
    """Where the fits run: ``execution`` (a study file's ``execution`` section as a dict), else ``n_jobs`` local
    processes (-1: every core, as joblib counts them), else what an enclosing ``joblib.parallel_config`` (or
    ``parallel_backend("dask")``) asks for; one process by default."""
    if execution is not None:
        if n_jobs is not None:
            raise ValueError("n_jobs and execution both say where the fits run: give one (execution={'n_jobs': 4, "
                             "...} takes n_jobs too)")
        return execution if isinstance(execution, ExecutionConfig) else parse_execution(execution)
    if n_jobs is not None and (not isinstance(n_jobs, numbers.Integral) or n_jobs == 0):
        raise ValueError(f"n_jobs == 0 has no meaning: give a positive number of processes, -1 for every core, or "
                         f"None (got n_jobs={n_jobs!r})")
    return ambient_execution(n_jobs)


def routed_params(search: Any, X: Any, y: Any, groups: Any, params: dict[str, Any]) -> tuple[Any, Any,
                                                                                               dict[str, Any], Any]:
    """(X, y, the estimator's fit params, the splitter's groups): with metadata routing enabled, as the
    estimator and the splitter requested them (``set_fit_request``); else every param goes to ``fit`` and
    ``groups`` to the splitter, as in ``GridSearchCV``."""
    X, y = indexable(X, y)
    params = _check_method_params(X, params)
    if _routing_enabled():
        routed = process_routing(search, "fit", **params, **({} if groups is None else {"groups": groups}))
        fit_params, split_params = dict(routed.estimator.fit), dict(routed.splitter.split)
        groups = split_params.get("groups")
    else:
        fit_params = params
    if groups is not None and _num_samples(groups) != _num_samples(X):
        raise ValueError(f"groups has {_num_samples(groups)} values for {_num_samples(X)} rows of X: one group label "
                         "per row")
    for name, value in fit_params.items():
        if name.endswith("sample_weight") and value is not None and _num_samples(value) != _num_samples(X):
            raise ValueError(f"{name} has {_num_samples(value)} values for {_num_samples(X)} rows of X")
    return X, y, fit_params, groups


def metadata_router(search: Any) -> MetadataRouter:
    """``SearchCV``'s routing, as ``GridSearchCV``'s: fit params to the estimator's ``fit``, groups to the
    splitter's ``split``."""
    router = MetadataRouter(owner=search)
    router.add(estimator=search.estimator, method_mapping=MethodMapping().add(caller="fit", callee="fit"))
    router.add(splitter=check_cv(search.cv), method_mapping=MethodMapping().add(caller="fit", callee="split"))
    return router


def cv_splits(cv: Any, X: Any, y: Any, groups: Any, classifier: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, test) index pairs of ``cv``: an int (stratified folds for classifiers), a splitter or an
    iterable of pairs, as scikit-learn's searches take it; refused when it yields nothing or a fold without rows."""
    n_rows = _num_samples(X)
    if isinstance(cv, numbers.Integral) and not isinstance(cv, bool) and n_rows < cv:
        raise ValueError(f"cv={cv} folds but X has only {n_rows} rows")
    splits = [(np.asarray(train), np.asarray(test)) for train, test in
              check_cv(cv, y, classifier=classifier).split(X, y, groups)]
    if not splits:
        raise ValueError(f"cv={cv!r} yields no (train, test) split: no fits can be performed")
    if any(len(train) == 0 or len(test) == 0 for train, test in splits):
        raise ValueError(f"cv={cv!r} yields a split with no training or no test rows")
    return splits


def checked_space(estimator: Any, space: Any, strategy: str) -> SearchSpace:
    """``space`` as a :class:`SearchSpace`, each key a parameter ``set_params`` accepts."""
    if not isinstance(space, dict) or not space:
        raise ValueError("space must be a non-empty dict of parameter name -> range, list or distribution")
    checked = SearchSpace({str(k): as_dimension(v) for k, v in space.items()})
    checked.check_strategy(strategy)
    accepted = _settable_names(estimator)
    for name, value in zip(checked.dimensions, _one_candidate(checked)):
        try:
            clone(estimator).set_params(**{name: value})
        except (ValueError, TypeError):
            raise ValueError(f"space key {name!r} is not a parameter of {type(estimator).__name__}"
                             f"{did_you_mean(name, accepted)}. Inside a pipeline, name the step: "
                             "'step__param'.") from None
    return checked


def check_data(estimator: Any, X: Any, y: Any) -> None:
    """Refuse data the search cannot run on: no y, too few rows, no features, what the Keras model would get not
    numeric (in scikit-learn's words where it has them)."""
    if y is None:
        raise ValueError("SearchCV requires y to be passed, but the target y is None")
    n_rows, n_targets = _num_samples(X), _num_samples(y)
    if n_targets != n_rows:
        raise ValueError(f"X has {n_rows} rows but y has {n_targets}; both are required, one target per row")
    if n_rows < 2:
        raise ValueError(f"X has {n_rows} sample(s): a search needs at least one row per fold")
    if len(np.shape(X)) == 2 and np.shape(X)[1] == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={np.shape(X)}) while a minimum of 1 is required.")
    model_input = X
    if isinstance(estimator, Pipeline) and len(estimator) > 1:
        model_input = clone(estimator[:-1]).fit_transform(X, y)  # what the Keras model will see
    _check_numeric(model_input, "after the pipeline's preprocessing" if model_input is not X else "")
    if pd.isna(np.asarray(y, dtype=object)).any():
        raise ValueError("y contains missing values (NaN/None): drop or fill those rows first")


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
        except (TypeError, ValueError) as exc:  # the same type, as scikit-learn's estimators raise
            raise type(exc)(f"X holds non-numeric values{suffix} ({exc}): a Keras model needs numbers; encode them "
                            "first, e.g. OneHotEncoder in a ColumnTransformer before the model") from None
    if not np.isfinite(values).all():
        raise ValueError(f"X contains missing or infinite values{suffix}: put an imputer (SimpleImputer) "
                         "before the Keras model, or clean the data")
