"""scikeras wrappers fixed for today's scikit-learn (the only module that imports scikeras).

Fixes over scikeras 0.13:
- scikit-learn >= 1.6 reads ``__sklearn_tags__``; scikeras only sets ``_estimator_type``, so
  ``is_classifier`` was False and searches used KFold instead of StratifiedKFold.
- ``fit(..., callbacks=[...])`` is honoured for that fit instead of silently dropped.
- ``fit(..., validation_data=(X, y))`` goes through the same feature and target encoders as the
  training data (class labels such as strings are encoded, not passed raw to Keras).
- A regressor's whole-number target is still continuous (scikeras called it "multiclass").
- Sparse input (a OneHotEncoder's output) is densified instead of crashing inside TensorFlow.
- A model trained on float32 predicts on float64 (or integer) data instead of refusing it.
- ``random_state`` seeds Keras without toggling TensorFlow's global op determinism (which broke
  later unseeded fits in the same process).
- Parameters of the ``model`` factory can be set by their plain names (``set_params(n_hidden=2)``)
  without declaring them in the constructor.
- ``predict`` on arrays runs the model's forward pass directly (in chunks of 1,024 rows) instead of
  Keras' ``predict``, which traces a new graph for every new model (~0.4 s: a tenth of a small trial).
  On JAX, where eager ops compile for every new shape, it is Keras' ``predict`` in batches of up to 8,192 rows.

New: Keras is told the number of batches per epoch (``steps_per_epoch``, ``validation_steps``) when it
splits no rows itself, so it reuses the data iterator it made for the next pass instead of making another
(with :func:`hpsearch.models.backend`'s fix to ``evaluate``, half the iterators a validated fit made go).

New: in-memory arrays (up to 256 MB) reach Keras as a lean tf.data pipeline
(:func:`hpsearch.models.backend.array_batches`) instead of Keras' own, which hands every batch between
threads; the same batches, reshuffled every epoch (Keras' own feed, seeded, repeats one order every epoch).

On JAX (or torch) Keras' own array feed is already lean (~0.015 s per epoch for the chapter's MLP): arrays go to
it as they are, and the validation rows are scored in batches of up to ``_VALIDATION_ROWS`` (the same mean loss;
one compiled shape instead of two, and far fewer steps).

New: ``steps_per_execution=N`` runs N batches per call into TensorFlow (the same training, batch by
batch; ~2.8x faster epochs for the chapter's small MLPs), unless the factory compiled its own, and not on
torch, whose Keras trainer takes one batch per call. Keras'
default is 1 because per-batch callbacks then see every Nth batch only.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.utils import ClassifierTags, RegressorTags

from hpsearch.models.backend import BACKEND, array_batches, keras, without_tensorflow

with without_tensorflow():  # scikeras imports TensorFlow (1.8 s) only to seed it, which hpsearch does itself
    import scikeras.wrappers as sk

_PREDICT_ROWS = 1024  # rows per direct forward pass in predict
_VALIDATION_ROWS = 8192  # rows per validation batch on JAX/torch (one compiled shape for most validation sets)
_BATCHED_BYTES = 256 * 2**20  # training arrays up to this size go through array_batches


def is_keras_wrapper(estimator: Any) -> bool:
    """Whether ``estimator`` is a scikeras wrapper (ours or scikeras' own)."""
    return isinstance(estimator, sk.BaseWrapper)


class _Fixed:
    """Behaviour shared by both wrappers; see the module docstring."""

    def __init__(self, model: Any = None, *, steps_per_execution: int = 1, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.steps_per_execution = steps_per_execution

    # scikeras seeds each build/fit inside a context that switches TensorFlow's global op determinism
    # on and off, which leaks into later unseeded fits ("Random ops require a seed"). We keep the
    # seed and give it to Keras' own ``set_random_seed`` instead.
    @property
    def _random_state(self) -> None:
        return None

    @_random_state.setter
    def _random_state(self, seed: Any) -> None:
        self._seed = seed

    def _build_keras_model(self) -> Any:
        seed = getattr(self, "_seed", None)
        if seed is not None:
            keras.utils.set_random_seed(int(seed))
        return super()._build_keras_model()

    def _factory_params(self) -> set[str]:
        model = getattr(self, "model", None)
        if not callable(model) or isinstance(model, type):
            return set()
        return {p for p in inspect.signature(model).parameters if p not in ("meta", "compile_kwargs", "params")}

    def set_params(self, **params: Any) -> Any:
        own = set(self._get_param_names()) | set(inspect.signature(type(self).__init__).parameters)
        plain = {k: v for k, v in params.items() if k in self._factory_params() and k not in own}
        for name, value in plain.items():
            setattr(self, name, value)
            self._user_params = getattr(self, "_user_params", set()) | {name}
        rest = {k: v for k, v in params.items() if k not in plain}
        return super().set_params(**rest) if rest else self

    def _validate_data(self, X: Any = None, y: Any = None, reset: bool = False, y_numeric: bool = False) -> Any:
        if X is not None and sparse.issparse(X):
            X = X.toarray()  # e.g. a OneHotEncoder's output; TensorFlow rejects some sparse layouts
        fitted_dtype = getattr(self, "X_dtype_", None)
        if X is not None and not reset and fitted_dtype is not None and fitted_dtype.kind == "f":
            X = np.asarray(X)
            if X.dtype.kind in "fiu" and X.dtype != fitted_dtype:
                X = X.astype(fitted_dtype)  # float64 data into a float32-trained model: a network is fine
        return super()._validate_data(X, y, reset=reset, y_numeric=y_numeric)

    def _fit_keras_model(self, X: Any, y: Any, sample_weight: Any, warm_start: bool, epochs: int,
                         initial_epoch: int, **kwargs: Any) -> None:
        extra_callbacks = kwargs.pop("callbacks", None) or []
        validation = kwargs.get("validation_data")
        if validation is not None:
            X_val, y_val = self._validate_data(validation[0], validation[1])
            kwargs["validation_data"] = (self.feature_encoder_.transform(X_val), self.target_encoder_.transform(y_val))
        fit_args = {**sk.route_params(self.get_params(), destination="fit", pass_filter=self._fit_kwargs), **kwargs}
        batches = self._batches(X, y, sample_weight, fit_args) if BACKEND == "tensorflow" else None
        if BACKEND != "tensorflow":
            kwargs.update(self._whole_validation(X, fit_args))
        elif batches is None:
            kwargs.update(self._fixed_steps(X, fit_args))
        else:
            X, y, sample_weight = batches.pop("x"), None, None
            kwargs.update(batches)
        model = self.model_
        if (self.steps_per_execution != 1 and model.steps_per_execution == 1 and model.train_function is None
                and BACKEND != "torch"):  # Keras' torch trainer runs one batch per call only
            model.steps_per_execution = int(self.steps_per_execution)  # before Keras traces its train step
        configured = self._fit_callbacks
        self._fit_callbacks = [*configured, *extra_callbacks]
        try:
            super()._fit_keras_model(X, y, sample_weight, warm_start, epochs, initial_epoch, **kwargs)
        finally:
            self._fit_callbacks = configured

    @classmethod
    def _batches(cls, X: Any, y: Any, sample_weight: Any, fit_args: dict[str, Any]) -> dict[str, Any] | None:
        """Keras' fit arguments that feed in-memory arrays through :func:`~hpsearch.models.backend.array_batches`:
        the training rows, shuffled every pass unless ``shuffle=False``, and the validation rows
        (``validation_data``, or the last ``validation_split`` of the rows, as Keras takes them). None: Keras'
        own feed, for anything but single arrays, for a per-batch shuffle, and above ``_BATCHED_BYTES`` (the
        shuffle buffer holds a second copy of the training rows).
        """
        arrays = (X, y) if sample_weight is None else (X, y, sample_weight)
        validation = fit_args.get("validation_data")
        if (not all(isinstance(a, np.ndarray) for a in (*arrays, *(validation or ())))
                or fit_args.get("shuffle") == "batch" or sum(a.nbytes for a in arrays) > _BATCHED_BYTES):
            return None
        if validation is None and fit_args.get("validation_split"):
            at = math.floor(len(X) * (1.0 - fit_args["validation_split"]))
            if not 0 < at < len(X):
                return None  # Keras' own error says why
            arrays, validation = tuple(a[:at] for a in arrays), tuple(a[at:] for a in arrays)
        batch, validation_batch = cls._batch_sizes(len(arrays[0]), fit_args)
        feed = {"x": array_batches(arrays, batch, shuffle=fit_args.get("shuffle", True) is not False),
                "batch_size": None, "shuffle": False, "validation_split": 0.0,
                **cls._fixed_steps(arrays[0], {**fit_args, "validation_data": validation, "validation_split": 0.0})}
        if validation is not None:
            feed.update(validation_data=array_batches(tuple(validation), validation_batch, shuffle=False),
                        validation_batch_size=None)
        return feed

    @staticmethod
    def _whole_validation(X: Any, fit_args: dict[str, Any]) -> dict[str, int]:
        """``validation_batch_size`` for Keras' own feed: the validation rows (``validation_data``, or the
        ``validation_split`` Keras takes) in as few batches as fit in :data:`_VALIDATION_ROWS`, unless set."""
        validation = fit_args.get("validation_data")
        if validation is not None and hasattr(validation[0], "shape"):
            rows = len(validation[0])
        elif fit_args.get("validation_split") and hasattr(X, "shape"):
            rows = len(X) - math.floor(len(X) * (1.0 - fit_args["validation_split"]))
        else:
            return {}
        if fit_args.get("validation_batch_size") or rows < 1:
            return {}
        return {"validation_batch_size": min(rows, _VALIDATION_ROWS)}

    @staticmethod
    def _batch_sizes(rows: int, fit_args: dict[str, Any]) -> tuple[int, int]:
        """(training, validation) batch sizes as Keras reads fit's arguments (-1: all ``rows``, as
        scikeras reads it)."""
        def size(value: Any, default: int) -> int:
            value = value or default
            return rows if value == -1 else int(value)

        batch = size(fit_args.get("batch_size"), 32)  # Keras' default
        return batch, size(fit_args.get("validation_batch_size"), batch)

    @classmethod
    def _fixed_steps(cls, X: Any, fit_args: dict[str, Any]) -> dict[str, int]:
        """``steps_per_epoch`` and ``validation_steps`` (the number of batches Keras would count) when unset.

        With them Keras reuses the data iterator it made at the end of each pass instead of making another
        (two of every four tf.data iterators a validated epoch made went unused: ~12 % of a small MLP's fit).
        """
        if fit_args.get("validation_split") or not hasattr(X, "shape"):
            return {}  # Keras splits the rows itself: leave the counting to it
        batch, validation_batch = cls._batch_sizes(X.shape[0], fit_args)
        steps = {} if fit_args.get("steps_per_epoch") else {"steps_per_epoch": max(math.ceil(X.shape[0] / batch), 1)}
        validation = fit_args.get("validation_data")
        if validation is not None and not fit_args.get("validation_steps") and hasattr(validation[0], "shape"):
            steps["validation_steps"] = max(math.ceil(validation[0].shape[0] / validation_batch), 1)
        return steps

    def _predict_raw(self, X: Any, **kwargs: Any) -> Any:
        """Raw outputs by the model's forward pass (one input, one output, no predict options); else scikeras'."""
        model = getattr(self, "model_", None)
        plain = model is not None and all(len(getattr(model, side, None) or ()) == 1 for side in ("inputs", "outputs"))
        if kwargs or getattr(self, "_predict_callbacks", None) or not plain:
            return super()._predict_raw(X, **kwargs)
        X, _ = self._validate_data(X=X, y=None)
        X = np.asarray(self.feature_encoder_.transform(X))
        if BACKEND != "tensorflow":  # eager ops compile per shape there: one compiled step, few large batches
            return model.predict(X, batch_size=max(1, min(len(X), _VALIDATION_ROWS)), verbose=0)
        chunks = [keras.ops.convert_to_numpy(model(X[start:start + _PREDICT_ROWS], training=False))
                  for start in range(0, max(len(X), 1), _PREDICT_ROWS)]
        return np.concatenate(chunks)


def _tagged(tags: Any, kind: str) -> Any:
    """scikit-learn >= 1.6 tags for a scikeras regressor or classifier (scikeras 0.13 sets none)."""
    tags.estimator_type = kind
    tags.classifier_tags = ClassifierTags() if kind == "classifier" else None
    tags.regressor_tags = RegressorTags() if kind == "regressor" else None
    tags.input_tags.sparse = True  # densified by _Fixed._validate_data
    tags.target_tags.required = True
    return tags


class KerasRegressor(_Fixed, sk.KerasRegressor):
    """scikeras' KerasRegressor, tagged as a regressor for scikit-learn >= 1.6."""

    def _type_of_target(self, y: Any) -> str:
        # A regressor's target is continuous even when its values happen to be whole numbers
        # (scikeras would call integer-valued targets "multiclass").
        return "continuous-multioutput" if np.ndim(y) == 2 and np.shape(y)[1] > 1 else "continuous"

    def __sklearn_tags__(self):
        return _tagged(super().__sklearn_tags__(), "regressor")


class KerasClassifier(_Fixed, sk.KerasClassifier):
    """scikeras' KerasClassifier, tagged as a classifier (so CV stratifies) for scikit-learn >= 1.6."""

    def __sklearn_tags__(self):
        return _tagged(super().__sklearn_tags__(), "classifier")
