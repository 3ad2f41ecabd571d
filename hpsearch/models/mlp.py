"""The chapter's multilayer perceptron as a ``build_model`` factory (Tables 10-1 and 10-2)."""

from __future__ import annotations

from typing import Any

from hpsearch.config.schema import MLP_DEFAULTS
from hpsearch.errors import ConfigError, did_you_mean
from hpsearch.models.backend import keras
from hpsearch.space.dimensions import Categorical, Dimension, Fixed

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "nadam", "adamax")
# Output layer and loss by task (Table 10-1 for regression, Table 10-2 for classification).
_HEADS = {
    "regression": (None, "mse"),
    "binary": ("sigmoid", "binary_crossentropy"),
    "multilabel": ("sigmoid", "binary_crossentropy"),
    "multiclass": ("softmax", "sparse_categorical_crossentropy"),
}
# The mlp's arguments that name a Keras object, by the keras module that knows the names.
_KERAS_NAMES = {"activation": "activations", "output_activation": "activations", "loss": "losses",
                "kernel_initializer": "initializers", "metrics": "metrics"}
_METRIC_ALIASES = ("accuracy", "acc", "crossentropy", "ce")  # names Keras' compile resolves by the loss
_TARGET_TYPES = {"binary": "binary", "multiclass": "multiclass", "multilabel-indicator": "multilabel"}


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """A Keras optimizer by the chapter's names (``momentum`` and ``nesterov`` are SGD variants)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if name in ("momentum", "nesterov"):
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9, nesterov=name == "nesterov")
    return keras.optimizers.get({"class_name": name, "config": {"learning_rate": learning_rate}})


def check_mlp_names(fixed: dict[str, Any], space: dict[str, Dimension]) -> None:
    """Refuse, before any training, an optimizer, activation, loss, initializer or metric name the mlp cannot build
    with, fixed in ``model.params`` or anywhere in ``search.space``, naming the field and the closest valid name."""
    for name in ("optimizer", *_KERAS_NAMES):
        for field, value in _named_values(name, fixed, space):
            for item in value if name == "metrics" and isinstance(value, (list, tuple)) else [value]:
                problem = _name_problem(name, item)
                if problem:
                    raise ConfigError(problem, field=field)


def _named_values(name: str, fixed: dict[str, Any], space: dict[str, Dimension]) -> list[tuple[str, Any]]:
    dim = space.get(name)
    if isinstance(dim, Categorical):
        return [(f"search.space.{name}", choice) for choice in dim.choices]
    if isinstance(dim, Fixed):
        return [(f"search.space.{name}", dim.value)]
    return [(f"model.params.{name}", fixed[name])] if name in fixed else []


def _name_problem(name: str, value: Any) -> str | None:
    """Why the mlp cannot build with ``value`` for argument ``name`` (strings only: Keras takes configs too)."""
    if not isinstance(value, str):
        return None
    if name == "optimizer":
        known, whose = OPTIMIZERS, "the mlp's names"
    elif name == "metrics" and value in _METRIC_ALIASES:
        return None
    else:
        module = getattr(keras, _KERAS_NAMES[name])
        try:
            module.get(value)
            return None
        except (ValueError, TypeError):
            # functions by their names; metrics also by their classes' (RootMeanSquaredError, AUC)
            known = tuple(n for n in dir(module) if not n.startswith("_") and n not in ("get", "serialize",
                          "deserialize") and (n.islower() or name == "metrics" and n[0].isupper()))
            whose = "Keras' names"
    if value in known:
        return None
    return f"the mlp cannot build with {name} {value!r}{did_you_mean(value, known)}; {whose}: {', '.join(known)}"


def task_from_meta(meta: dict[str, Any]) -> str:
    """The task scikeras saw in the target: regression, binary, multiclass or multilabel."""
    target_type = meta.get("target_type_", "continuous")
    if target_type.startswith("continuous"):
        return "regression"
    if target_type not in _TARGET_TYPES:
        raise ValueError(f"the mlp factory does not support {target_type!r} targets")
    return _TARGET_TYPES[target_type]


def _n_outputs(meta: dict[str, Any], task: str) -> int:
    if task == "regression":
        return int(meta.get("n_outputs_", 1))
    if task == "binary":
        return 1
    return int(meta["n_classes_"])


def build_mlp(
    meta: dict[str, Any],
    n_hidden: int = MLP_DEFAULTS["n_hidden"],
    n_neurons: int | list[int] = MLP_DEFAULTS["n_neurons"],
    activation: str = MLP_DEFAULTS["activation"],
    optimizer: str = MLP_DEFAULTS["optimizer"],
    learning_rate: float = MLP_DEFAULTS["learning_rate"],
    output_activation: str | None = None,
    loss: str | None = None,
    metrics: list[str] | None = None,
    dropout: float = 0.0,
    l2: float = 0.0,
    kernel_initializer: str = "glorot_uniform",
) -> keras.Model:
    """Build and compile the chapter's MLP for whatever data scikeras hands over.

    Inputs of any shape are flattened (like the chapter's Fashion-MNIST model). ``n_neurons``
    is one width for every hidden layer (the chapter's advice) or a list of per-layer widths,
    which then also fixes the depth. The output layer and loss follow the task; pass
    ``output_activation`` (e.g. ``softplus``) or ``loss`` (e.g. ``huber``) to override.
    """
    task = task_from_meta(meta)
    widths = list(n_neurons) if isinstance(n_neurons, (list, tuple)) else [n_neurons] * n_hidden
    head_activation, default_loss = _HEADS[task]
    regularizer = keras.regularizers.L2(l2) if l2 else None
    layers: list[keras.Layer] = [keras.Input(shape=tuple(meta["X_shape_"][1:]))]
    if len(meta["X_shape_"]) > 2:
        layers.append(keras.layers.Flatten())
    for width in widths:
        layers.append(keras.layers.Dense(int(width), activation=activation,
                                         kernel_initializer=kernel_initializer, kernel_regularizer=regularizer))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(_n_outputs(meta, task), activation=output_activation or head_activation))
    model = keras.Sequential(layers)
    default_metrics = ["RootMeanSquaredError"] if task == "regression" else ["accuracy"]
    model.compile(
        loss=loss or default_loss,
        optimizer=make_optimizer(optimizer, learning_rate),
        metrics=default_metrics if metrics is None else metrics,
    )
    return model
