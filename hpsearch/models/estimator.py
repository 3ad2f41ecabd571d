"""From a study's model section to a scikit-learn estimator: factory lookup, wrapper, preprocessing."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from hpsearch.config.schema import WRAPPER_PARAMS, TrainingConfig
from hpsearch.errors import ConfigError, did_you_mean

BUILTIN_FACTORIES = {"mlp": "hpsearch.models.mlp:build_mlp"}
_SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler}


def resolve_factory(spec: str) -> Callable[..., Any]:
    """The ``build_model`` function named by a builtin name or ``package.module:function``."""
    if ":" not in spec:
        if spec not in BUILTIN_FACTORIES:
            raise ConfigError(f"unknown factory {spec!r}{did_you_mean(spec, BUILTIN_FACTORIES)}; "
                              f"builtins: {', '.join(BUILTIN_FACTORIES)}, "
                              "or give your own as 'package.module:function'", field="model.factory")
        spec = BUILTIN_FACTORIES[spec]
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module_name!r} ({exc}); is it installed or on PYTHONPATH?",
                          field="model.factory") from None
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise ConfigError(f"module {module_name!r} has no function {function_name!r}", field="model.factory")
    return factory


def check_params(factory: Callable[..., Any], names: list[str], field: str) -> None:
    """Every searched/fixed name must be an argument of the factory (or a training parameter)."""
    signature = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in signature.values()):
        return
    accepted = (set(signature) | WRAPPER_PARAMS) - {"meta", "compile_kwargs", "params"}
    for name in names:
        if name not in accepted:
            raise ConfigError(f"{name!r} is not a parameter of the model factory{did_you_mean(name, accepted)}; "
                              f"it accepts: {', '.join(sorted(accepted))}", field=f"{field}.{name}")


def make_estimator(factory: Callable[..., Any], task: str, params: dict[str, Any], training: TrainingConfig) -> Any:
    """A scikeras estimator (regressor or classifier by task) with ``params`` routed to the factory."""
    from hpsearch.models.wrappers import KerasClassifier, KerasRegressor

    wrapper = KerasRegressor if task == "regression" else KerasClassifier
    routed = {(k if k in WRAPPER_PARAMS else f"model__{k}"): v for k, v in params.items()}
    settings = {"epochs": training.epochs, "batch_size": training.batch_size,
                "steps_per_execution": training.steps_per_execution, **routed}
    if training.class_weight is not None and task != "regression":
        settings.setdefault("class_weight", training.class_weight)
    return wrapper(model=factory, verbose=0, **settings)


def make_preprocessor(scale: str) -> Any | None:
    """The feature scaler the study asks for (fitted inside each fold), or None."""
    return _SCALERS[scale]() if scale in _SCALERS else None


def assemble(preprocessor: Any | None, estimator: Any) -> Any:
    """The deployable model: a Pipeline (scaler, model) of fitted steps, or the model alone."""
    if preprocessor is None:
        return estimator
    return Pipeline([("scale", preprocessor), ("model", estimator)])
