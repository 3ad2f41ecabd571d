"""The chapter's MLP as ready scikit-learn estimators: ``KerasMLPRegressor`` and ``KerasMLPClassifier``.

Every argument of :func:`~hpsearch.models.mlp.build_mlp` is a constructor parameter, so the usual
scikit-learn tools (``clone``, ``GridSearchCV``, ``Pipeline``'s ``step__param``) reach it directly.
"""

from __future__ import annotations

from typing import Any

from hpsearch.config.schema import MLP_DEFAULTS
from hpsearch.models.backend import keras
from hpsearch.models.mlp import build_mlp
from hpsearch.models.wrappers import KerasClassifier, KerasRegressor

MLP_PARAMS = ("n_hidden", "n_neurons", "activation", "optimizer", "learning_rate", "output_activation", "loss",
              "metrics", "dropout", "l2", "kernel_initializer")


class _MLP:
    """Builds :func:`build_mlp` from the estimator's own parameters; optional early stopping."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # A few epochs of SGD on scikit-learn's check data need not beat its score thresholds.
        for task_tags in (tags.classifier_tags, tags.regressor_tags):
            if task_tags is not None:
                task_tags.poor_score = True
        tags.non_deterministic = True
        return tags

    def _keras_build_fn(self, meta: dict[str, Any]) -> keras.Model:
        return build_mlp(meta, **{name: getattr(self, name) for name in MLP_PARAMS})

    def _fit_keras_model(self, X: Any, y: Any, sample_weight: Any, warm_start: bool, epochs: int,
                         initial_epoch: int, **kwargs: Any) -> None:
        if self.early_stopping:
            validated = self.validation_split > 0 or kwargs.get("validation_data") is not None
            stopper = keras.callbacks.EarlyStopping(monitor="val_loss" if validated else "loss",
                                                    patience=int(self.early_stopping), restore_best_weights=True)
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), stopper]
        super()._fit_keras_model(X, y, sample_weight, warm_start, epochs, initial_epoch, **kwargs)


class KerasMLPRegressor(_MLP, KerasRegressor):
    """The chapter's regression MLP (one linear unit per target, MSE) as a scikit-learn regressor.

    ``early_stopping=10`` stops after 10 epochs without improvement of the loss on the last
    ``validation_split`` of the training data and restores the best weights.
    """

    def __init__(self, n_hidden: int = MLP_DEFAULTS["n_hidden"], n_neurons: int | list[int] = MLP_DEFAULTS["n_neurons"],
                 activation: str = MLP_DEFAULTS["activation"], optimizer: str = MLP_DEFAULTS["optimizer"],
                 learning_rate: float = MLP_DEFAULTS["learning_rate"], output_activation: str | None = None,
                 loss: str | None = None, metrics: list[str] | None = None, dropout: float = 0.0, l2: float = 0.0,
                 kernel_initializer: str = "glorot_uniform", epochs: int = 100, batch_size: int = 32,
                 early_stopping: int | None = None, validation_split: float = 0.1, verbose: int = 0,
                 random_state: int | None = None, steps_per_execution: int = 32, **kwargs: Any) -> None:
        super().__init__(optimizer=optimizer, loss=loss, metrics=metrics, epochs=epochs, batch_size=batch_size,
                         validation_split=validation_split, verbose=verbose, random_state=random_state,
                         steps_per_execution=steps_per_execution, **kwargs)
        self.n_hidden, self.n_neurons, self.activation = n_hidden, n_neurons, activation
        self.learning_rate, self.output_activation = learning_rate, output_activation
        self.dropout, self.l2, self.kernel_initializer = dropout, l2, kernel_initializer
        self.early_stopping = early_stopping


class KerasMLPClassifier(_MLP, KerasClassifier):
    """The chapter's classification MLP (sigmoid or softmax head by target) as a scikit-learn classifier."""

    def __init__(self, n_hidden: int = MLP_DEFAULTS["n_hidden"], n_neurons: int | list[int] = MLP_DEFAULTS["n_neurons"],
                 activation: str = MLP_DEFAULTS["activation"], optimizer: str = MLP_DEFAULTS["optimizer"],
                 learning_rate: float = MLP_DEFAULTS["learning_rate"], output_activation: str | None = None,
                 loss: str | None = None, metrics: list[str] | None = None, dropout: float = 0.0, l2: float = 0.0,
                 kernel_initializer: str = "glorot_uniform", epochs: int = 100, batch_size: int = 32,
                 early_stopping: int | None = None, validation_split: float = 0.1, verbose: int = 0,
                 random_state: int | None = None, class_weight: Any = None, steps_per_execution: int = 32,
                 **kwargs: Any) -> None:
        super().__init__(optimizer=optimizer, loss=loss, metrics=metrics, epochs=epochs, batch_size=batch_size,
                         validation_split=validation_split, verbose=verbose, random_state=random_state,
                         class_weight=class_weight, steps_per_execution=steps_per_execution, **kwargs)
        self.n_hidden, self.n_neurons, self.activation = n_hidden, n_neurons, activation
        self.learning_rate, self.output_activation = learning_rate, output_activation
        self.dropout, self.l2, self.kernel_initializer = dropout, l2, kernel_initializer
        self.early_stopping = early_stopping
