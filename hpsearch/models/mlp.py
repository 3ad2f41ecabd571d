"""The chapter's multilayer perceptron as a ``build_model`` factory (Tables 10-1 and 10-2)."""

from __future__ import annotations

from typing import Any

from hpsearch.config.schema import MLP_DEFAULTS
from hpsearch.models.backend import keras

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "nadam", "adamax")
# Output layer and loss by task (Table 10-1 for regression, Table 10-2 for classification).
_HEADS = {
    "regression": (None, "mse"),
    "binary": ("sigmoid", "binary_crossentropy"),
    "multilabel": ("sigmoid", "binary_crossentropy"),
    "multiclass": ("softmax", "sparse_categorical_crossentropy"),
}
_TARGET_TYPES = {"binary": "binary", "multiclass": "multiclass", "multilabel-indicator": "multilabel"}


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """A Keras optimizer by the chapter's names (``momentum`` and ``nesterov`` are SGD variants)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if name in ("momentum", "nesterov"):
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9, nesterov=name == "nesterov")
    return keras.optimizers.get({"class_name": name, "config": {"learning_rate": learning_rate}})


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
