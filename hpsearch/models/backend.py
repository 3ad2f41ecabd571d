"""Keras start-up, quietly: TensorFlow's start-up logs silenced, threads limited, sessions cleared.

Keras runs on the backend in ``$KERAS_BACKEND`` (TensorFlow unless :func:`hpsearch.models.backend_choice.use_backend`
chose another before this module was imported). TensorFlow is imported only when it is the backend.
Set ``HPSEARCH_TF_LOGS=1`` to see TensorFlow's own logs again. hpsearch's patches of Keras internals
(:mod:`hpsearch.models._patches`, ``HPSEARCH_NO_PATCHES=1`` turns them off) apply on import.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: TensorFlow's C++ start-up logs bypass every log level."""
    if os.environ.get("HPSEARCH_TF_LOGS") or "tensorflow" in sys.modules:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _stderr_silenced():
    import keras  # noqa: E402

    BACKEND = keras.config.backend()
    tf: Any = None
    if BACKEND == "tensorflow":
        import tensorflow as tf  # noqa: E402

from hpsearch.models import _patches  # noqa: E402  (after Keras, before anything else imports TensorFlow)

APPLIED_PATCHES = _patches.apply(BACKEND, tensorflow_loaded=tf is not None or "tensorflow" in sys.modules)

if not os.environ.get("HPSEARCH_TF_LOGS"):
    logging.getLogger("absl").setLevel(logging.ERROR)
    if tf is not None:
        tf.get_logger().setLevel(logging.ERROR)


@contextlib.contextmanager
def without_tensorflow() -> Iterator[None]:
    """Imports inside see no TensorFlow unless it is the backend (or already loaded): libraries that import it
    only when present (scikeras, to seed it) skip it, and a JAX process starts ~2 s sooner."""
    if tf is not None or "tensorflow" in sys.modules:
        yield
        return
    sys.modules["tensorflow"] = None  # type: ignore[assignment]  # "import tensorflow" raises ImportError
    try:
        yield
    finally:
        del sys.modules["tensorflow"]


def limit_threads(n_threads: int | None) -> None:
    """Cap the backend's thread pools (call before the first model is built; TensorFlow only: a JAX process is
    capped by the CPUs it may use, ``hpsearch worker --cpus``)."""
    if not n_threads or tf is None:
        return
    with contextlib.suppress(RuntimeError):  # already initialised: keep what is in force
        tf.config.threading.set_intra_op_parallelism_threads(n_threads)
        tf.config.threading.set_inter_op_parallelism_threads(n_threads)


_FULL_COLLECT_EVERY = 10  # a full gc.collect() takes ~0.1-0.5 s with TensorFlow loaded: not before every fit
# emptying JAX's caches costs about 1 s (what runs next compiles again, mostly from the disk cache): every 30th
# session bounds the growth to ~30 MB at ~0.03 s per trial
_CLEAR_JAX_CACHES_EVERY = 30
_sessions = 0


def fresh_session(seed: int | None) -> None:
    """Free the previous trial's graphs and seed Python, numpy and TensorFlow for the next.

    Keras' own ``clear_session()`` runs a full garbage collection every time; a study of many short fits
    would spend a tenth of its time there, so the full collection runs every tenth session (the young
    generations are collected each time, and Keras' global state is always reset). On JAX every third full
    collection also empties JAX's in-memory caches of compiled functions, which otherwise keep every earlier
    model's train and predict steps (about 1 MB per trial); the compilation cache on disk stays.
    """
    global _sessions
    _sessions += 1
    full = _sessions % _FULL_COLLECT_EVERY == 1
    keras.backend.clear_session(free_memory=full)
    if not full:
        gc.collect(1)
    elif BACKEND == "jax" and _sessions % _CLEAR_JAX_CACHES_EVERY == 1:
        _clear_jax_caches()
    if seed is not None:
        keras.utils.set_random_seed(seed)  # TensorFlow too, unless _tensorflow_unused told Keras it is absent


def _clear_jax_caches() -> None:
    import jax

    jax.clear_caches()


def array_batches(arrays: tuple[Any, ...], batch_size: int, shuffle: bool) -> Any:
    """Batches of in-memory arrays for ``Model.fit``, reshuffled every pass when ``shuffle``.

    Keras' own pipeline for arrays gathers each batch on a parallel map behind an autotuned prefetch: for a
    small model every batch passes between several threads, and the autotuner's waits leave a core idle.
    Slices, a shuffle buffer and a fixed two-batch prefetch with autotuning off give the same batches (in
    the same order when not shuffled) in a fraction of the time. Shuffled, each pass draws a new order;
    Keras' own pipeline, once a seed is set, draws the same order for every pass.
    """
    data = tf.data.Dataset.from_tensor_slices(arrays)
    if shuffle:
        data = data.shuffle(len(arrays[0]), reshuffle_each_iteration=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return data.batch(batch_size).prefetch(2).with_options(options)


__all__ = ["BACKEND", "keras", "tf", "without_tensorflow", "limit_threads", "fresh_session",
           "array_batches"]
