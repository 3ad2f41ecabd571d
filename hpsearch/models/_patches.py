"""hpsearch's patches of Keras internals: each gated on the Keras versions it was written for, all switchable off.

A patch reaches into a private Keras module, so it applies only where ``keras.__version__`` is in
:data:`KERAS_VERSIONS` (a newer Keras runs stock until the patch is checked against it) and where the backend it
concerns runs. ``HPSEARCH_NO_PATCHES=1`` turns them all off: stock Keras, slower and with its memory growth.
:func:`apply` runs once, from :mod:`hpsearch.models.backend`, right after Keras is imported.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import keras
from packaging.specifiers import SpecifierSet
from packaging.version import Version

KERAS_VERSIONS = SpecifierSet(">=3.15,<3.16")
OFF_SWITCH = "HPSEARCH_NO_PATCHES"
_APPLIED: set[str] = set()


def _marked(function: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` in place of ``original``: ``__wrapped__`` is the stock one, ``_hpsearch`` marks it as ours."""
    function = functools.wraps(original)(function)
    function._hpsearch = True  # type: ignore[attr-defined]
    return function


def tensorflow_unused() -> None:
    """Tell Keras that TensorFlow is absent when it is neither the backend nor loaded: Keras otherwise imports it
    (~2 s, ~300 MB) on a model's first save, only to check ``isinstance(obj, tf.TensorShape)``. Import TensorFlow
    before hpsearch to hand Keras TensorFlow objects on another backend."""
    from keras.src.utils import module_utils

    if module_utils.tensorflow._available is None:
        module_utils.tensorflow._available = False


def keep_unused_iterators() -> None:
    """Let Keras' cached validation iterator keep the data iterator it made for its next pass.

    Keras 3 makes the next pass's tf.data iterator at the end of each pass (~10 ms each), but ``evaluate``
    resets its iterator first and throws that one away: with validation after every epoch, half the iterators
    a fit makes were never used. Keeping an iterator that was never read changes nothing else (Keras reuses it
    when the pass has a fixed number of steps, which :mod:`hpsearch.models.wrappers` gives it).
    """
    from keras.src.trainers.epoch_iterator import EpochIterator

    original = EpochIterator.reset

    def reset(self: EpochIterator) -> None:
        unused = getattr(self, "_steps_seen", None) == 0 and getattr(self, "steps_per_epoch", None)
        kept = getattr(self, "_current_iterator", None) if unused else None
        original(self)
        if kept is not None:
            self._current_iterator = kept

    EpochIterator.reset = _marked(reset, original)


def skip_single_replica_all_reduce() -> None:
    """Skip the optimizer's sum of gradients over replicas when there is one replica (no distribution strategy).

    Keras' TensorFlow optimizer sums each step's gradients over the replicas of the strategy in force. Under the
    default strategy (one replica) the sum changes nothing, but TensorFlow wraps it in a ``custom_gradient`` that
    registers a new gradient function in a process-wide registry each time a train step is traced, and the
    registry keeps every traced train step (its whole graph) alive: about 2 MB per trial over a study, the
    memory growth of keras#17458. Under a real strategy the sum runs as before.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow.optimizer import TFOptimizer

    original = TFOptimizer._all_reduce_sum_gradients

    def all_reduce_sum_gradients(self: TFOptimizer, grads_and_vars: Any) -> Any:
        if not tf.distribute.has_strategy():
            return list(grads_and_vars)
        return original(self, grads_and_vars)

    TFOptimizer._all_reduce_sum_gradients = _marked(all_reduce_sum_gradients, original)


def cache_saving_skipsets() -> None:
    """Compute Keras' saving skip-sets once per process instead of on every model save.

    To save a model, Keras lists the attributes of a fresh ``Layer``, ``Optimizer``, ``Metric``... to know which
    of a model's attributes to skip, and keeps the lists in its global state, which ``clear_session`` empties
    (``saving_attr_skipset_*`` / ``saving_attr_skiplist_*``, Keras 3.15), so every save builds those reference
    objects again: about 4 of the 10 ms a trial's model takes to pickle. The lists depend only on the classes.
    """
    from keras.src.saving import saving_lib

    original = saving_lib.get_attr_skipset
    saving_lib.get_attr_skipset = _marked(functools.cache(original), original)


# name -> (the patch, whether it concerns this process: its backend, whether TensorFlow is loaded)
PATCHES: dict[str, tuple[Callable[[], None], Callable[[str, bool], bool]]] = {
    "tensorflow_unused": (tensorflow_unused, lambda backend, tf_loaded: not tf_loaded),
    "keep_unused_iterators": (keep_unused_iterators, lambda backend, tf_loaded: backend == "tensorflow"),
    "skip_single_replica_all_reduce": (skip_single_replica_all_reduce,
                                       lambda backend, tf_loaded: backend == "tensorflow"),
    "cache_saving_skipsets": (cache_saving_skipsets, lambda backend, tf_loaded: True),
}


def apply(backend: str, tensorflow_loaded: bool, keras_version: str = keras.__version__) -> list[str]:
    """Apply the patches that concern this process, unless switched off or Keras is not a version they were
    written for; returns the names of those applied (once per process: a second call applies nothing)."""
    if os.environ.get(OFF_SWITCH, "").lower() in ("1", "true", "yes") or Version(keras_version) not in KERAS_VERSIONS:
        return []
    applied = []
    for name, (patch, concerns) in PATCHES.items():
        if concerns(backend, tensorflow_loaded) and name not in _APPLIED:
            patch()
            _APPLIED.add(name)
            applied.append(name)
    return applied
