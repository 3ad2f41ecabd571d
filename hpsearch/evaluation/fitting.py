"""How one candidate becomes one fitted model: from a study file, or from a user's scikit-learn estimator.

Keras is imported on the first fit, not with this module, so that the backend can still be chosen before.
Both fitters start every fit from a fresh Keras session (no leaked graphs, no retracing across
trials), feed the per-epoch hook, and turn a NaN loss into :class:`TrialFailed`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from hpsearch.config.schema import StudyConfig
from hpsearch.errors import TrialFailed
from hpsearch.models.backend_choice import factory_uses_tensorflow, running_backend
from hpsearch.models.estimator import assemble, make_estimator, make_preprocessor

if TYPE_CHECKING:
    from hpsearch.models.callbacks import EpochHook

Validation = tuple[np.ndarray, np.ndarray] | None
Fitter = Callable[..., Any]  # (params, X, y, validation, seed, hook, **fit_params) -> fitted model


def _check_history(wrapper: Any) -> None:
    losses = getattr(wrapper, "history_", {}).get("loss", [])
    if any(not math.isfinite(v) for v in losses):
        raise TrialFailed(f"the loss became NaN/inf at epoch {len(losses)} (learning rate too high?)")


class StudyFitter:
    """Fits the study's factory with its fixed params, scaler and training settings."""

    def __init__(self, study: StudyConfig, factory: Callable[..., Any], task: str) -> None:
        self.study, self.factory, self.task = study, factory, task
        self.fixed = dict(study.model.params)

    def new_estimator(self, params: dict[str, Any]) -> Any:
        """An unfitted estimator for ``params`` on top of the study's fixed params."""
        return make_estimator(self.factory, self.task, {**self.fixed, **params}, self.study.training)

    def __call__(self, params: dict[str, Any], X: Any, y: Any, validation: Validation, seed: int,
                 hook: EpochHook, sample_weight: Any = None) -> Any:
        from hpsearch.models.backend import fresh_session
        from hpsearch.models.callbacks import fit_callbacks

        fresh_session(seed)
        preprocessor = make_preprocessor(self.study.data.scale)
        if preprocessor is not None:
            X = preprocessor.fit_transform(X)
            if validation is not None:
                validation = (preprocessor.transform(validation[0]), validation[1])
        estimator = self.new_estimator(params)
        callbacks = fit_callbacks(self.study.training, hook, validation is not None)
        try:
            estimator.fit(X, y, sample_weight=sample_weight, validation_data=validation, callbacks=callbacks)
        except Exception as exc:
            _name_the_backend(exc, self.study.model.factory)
            raise
        _check_history(estimator)
        return assemble(preprocessor, estimator)


def _name_the_backend(exc: Exception, factory: str) -> None:
    """A factory whose module uses TensorFlow failed on another backend: fail the trial saying so."""
    backend = running_backend()
    if backend not in (None, "tensorflow") and factory_uses_tensorflow(factory):
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TrialFailed(f"{type(exc).__name__} on the {backend} backend: {message} (the factory's module "
                          f"{factory.partition(':')[0]} imports tensorflow, whose ops build only on the tensorflow "
                          "backend: set training.backend: tensorflow, which auto chooses for it)") from exc


def keras_step(estimator: Any) -> tuple[Any, str]:
    """The scikeras wrapper at the end of (nested) pipelines, and the fit-param prefix that reaches it."""
    from hpsearch.models.wrappers import is_keras_wrapper

    prefix = ""
    while isinstance(estimator, Pipeline):
        name, estimator = estimator.steps[-1]
        prefix += f"{name}__"
    return (estimator, prefix) if is_keras_wrapper(estimator) else (None, prefix)


class EstimatorFitter:
    """Fits a clone of the user's estimator (a Keras wrapper, or a pipeline ending in one), with the fit params the
    user gave ``fit`` (``epochs=``, ``callbacks=``, ``sample_weight=``, ...): the trial's own callbacks (curves,
    pruning, the NaN guard) come after the user's."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def new_estimator(self, params: dict[str, Any]) -> Any:
        return clone(self.estimator).set_params(**clone(params, safe=False))

    def __call__(self, params: dict[str, Any], X: Any, y: Any, validation: Validation, seed: int,
                 hook: EpochHook, **fit_params: Any) -> Any:
        from hpsearch.models.backend import fresh_session
        from hpsearch.models.callbacks import nan_guard

        fresh_session(seed)
        model = self.new_estimator(params)
        wrapper, prefix = keras_step(model)
        fit_params = {name: value for name, value in fit_params.items() if value is not None}
        if wrapper is not None:
            given = fit_params.get(f"{prefix}callbacks") or []
            fit_params[f"{prefix}callbacks"] = [*(given if isinstance(given, (list, tuple)) else [given]),
                                                *nan_guard(hook)]
        model.fit(X, y, **fit_params)
        if wrapper is not None:
            _check_history(wrapper)
        return model
