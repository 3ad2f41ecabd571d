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


def _docstring(summary: str, output: str, loss: str, metrics: str, examples: str, extra_params: str = "",
               extra_attributes: str = "") -> str:
    """The numpydoc docstring of one of the two estimators (their parameters are the same but for a few)."""
    return f"""{summary}

    Parameters
    ----------
    n_hidden : int, default 1
        Hidden layers (the chapter: 1-5 for most problems).
    n_neurons : int or list of int, default 30
        Units per hidden layer, or one count per layer (a pyramid).
    activation : str, default "relu"
        Hidden layers' activation (any Keras name).
    optimizer : str, default "sgd"
        Any Keras optimizer name (``"adam"``, ``"nadam"``, ...), built with ``learning_rate``.
    learning_rate : float, default 3e-3
        The optimizer's learning rate (search it on a log scale).
    output_activation : str, optional
        Default: {output}.
    loss : str, optional
        Default: {loss}.
    metrics : list of str, optional
        Compiled Keras metrics, logged per epoch. Default: {metrics}.
    dropout : float, default 0.0
        Dropout rate after every hidden layer.
    l2 : float, default 0.0
        L2 penalty on every hidden layer's kernel.
    kernel_initializer : str, default "glorot_uniform"
        Hidden layers' initialiser (``"he_normal"`` for ReLU, the chapter says).
    epochs : int, default 100
        Training epochs (early stopping may end them sooner).
    batch_size : int, default 32
        Rows per gradient step.
    early_stopping : int, optional
        Patience in epochs: stop when the loss on the last ``validation_split`` of the training rows has not
        improved for this many epochs, and restore the best weights.
    validation_split : float, default 0.1
        Share of the training rows Keras holds out for validation (early stopping watches it).
    verbose : int, default 0
        Keras' progress output.
    random_state : int, optional
        Seeds the weights and the shuffling.{extra_params}
    steps_per_execution : int, default 32
        Batches per call into TensorFlow (the same training, ~2.8x faster for small MLPs; 1 on torch).
    **kwargs
        Any other scikeras parameter (``callbacks``, ``fit__...``).

    Attributes
    ----------
    model_ : keras.Model
        The fitted Keras model.
    history_ : dict
        Per-epoch values of the loss and metrics (``val_`` ones with validation).
    n_features_in_ : int
        Input columns seen by ``fit``.{extra_attributes}

    See Also
    --------
    SearchCV : search this estimator's parameters, tracked in MLflow.

    Examples
    --------
{examples}
    """


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
    __doc__ = _docstring(
        "The chapter's regression MLP (one linear unit per target, MSE) as a scikit-learn regressor.",
        "linear (one unit per target)", '"mse"', '``["RootMeanSquaredError"]``', """\
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> import hpsearch
    >>> model = make_pipeline(StandardScaler(), hpsearch.KerasMLPRegressor(n_hidden=2, n_neurons=30,
    ...                                                                   early_stopping=10))
    >>> model.fit(X_train, y_train).predict(X_new)  # doctest: +SKIP""")

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
    __doc__ = _docstring(
        "The chapter's classification MLP (sigmoid or softmax head by target) as a scikit-learn classifier.",
        "sigmoid for binary or multilabel targets, softmax otherwise",
        "binary or sparse categorical cross-entropy, by target", '``["accuracy"]``', """\
    >>> from sklearn.datasets import load_breast_cancer
    >>> import hpsearch
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> model = hpsearch.KerasMLPClassifier(n_neurons=32, optimizer="adam", epochs=20, early_stopping=5)
    >>> model.fit(X, y).predict_proba(X[:2]).shape  # doctest: +SKIP
    (2, 2)""",
        extra_params="""
    class_weight : dict or "balanced", optional
        Weights per class, as scikit-learn's classifiers take them.""",
        extra_attributes="""
    classes_ : ndarray
        The class labels.""")

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
