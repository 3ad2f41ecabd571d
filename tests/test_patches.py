"""hpsearch's patches of Keras internals (``hpsearch.models._patches``): what each one changes, that it changes no
numbers, that it applies only on the Keras versions it was written for, and that ``HPSEARCH_NO_PATCHES=1`` gives
stock Keras back. Other backends and the off switch run in subprocesses: Keras fixes its backend on first import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hpsearch.models import _patches
from hpsearch.models.backend import APPLIED_PATCHES
from hpsearch.models.mlp import build_mlp
from hpsearch.models.wrappers import KerasRegressor


def sorted_binary(n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.array([0] * (n // 2) + [1] * (n // 2))
    return (rng.normal(size=(n, 3)) + y[:, None]).astype("float32"), y


def in_fresh_process(code: str, **env: str) -> dict:
    """The JSON that ``code`` prints last, run in a fresh Python with ``env`` on top of this one's."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


# A fresh process: which patches applied, whether TensorFlow got imported by saving a model, how many traced
# graphs five fits leave alive (TensorFlow only), and the last fit's losses.
PROBE = """
    import gc, json, pickle, sys
    import numpy as np
    from hpsearch.models.backend import APPLIED_PATCHES, BACKEND, fresh_session
    from hpsearch.models.mlp import build_mlp
    from hpsearch.models.wrappers import KerasRegressor

    rng = np.random.default_rng(0)
    y = np.array([0] * 30 + [1] * 30).astype("float32")
    X = (rng.normal(size=(60, 3)) + y[:, None]).astype("float32")

    def graphs():
        if BACKEND != "tensorflow":
            return 0
        from tensorflow.python.framework.func_graph import FuncGraph
        gc.collect()
        return sum(isinstance(o, FuncGraph) for o in gc.get_objects())

    losses = []
    for k in range(5):
        fresh_session(0)
        model = KerasRegressor(build_mlp, epochs=2, batch_size=8, random_state=0, verbose=0).fit(X, y)
        losses = model.history_["loss"]
        if k == 0:
            pickle.dumps(model)
            first = graphs()
    print(json.dumps({"applied": APPLIED_PATCHES, "tensorflow": "tensorflow" in sys.modules,
                      "graphs_kept": graphs() - first, "losses": losses}))
"""


APPLIED = {"tensorflow": ["keep_unused_iterators", "skip_single_replica_all_reduce", "cache_saving_skipsets"],
           "jax": ["tensorflow_unused", "cache_saving_skipsets"]}


def test_each_patch_applies_where_it_concerns_the_process():
    assert APPLIED_PATCHES == APPLIED["tensorflow"]  # this process runs on TensorFlow (JAX: the test below)


@pytest.mark.parametrize("version", ["3.14.0", "3.16.0", "4.0.0"])
def test_patches_apply_only_on_the_keras_versions_they_were_written_for(version):
    assert _patches.apply("tensorflow", False, keras_version=version) == []


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_the_off_switch_gives_stock_keras_back_and_the_same_numbers(backend):
    patched = in_fresh_process(PROBE, KERAS_BACKEND=backend)
    stock = in_fresh_process(PROBE, KERAS_BACKEND=backend, HPSEARCH_NO_PATCHES="1")
    assert patched["applied"] == APPLIED[backend] and stock["applied"] == []
    np.testing.assert_allclose(patched["losses"], stock["losses"], rtol=1e-6)
    if backend == "tensorflow":  # keras#17458: stock Keras keeps each fit's train step alive, the patch frees it
        assert stock["graphs_kept"] >= 4 and patched["graphs_kept"] <= 0
    else:  # stock Keras imports TensorFlow to save a model even on JAX
        assert stock["tensorflow"] is True and patched["tensorflow"] is False


def test_fixed_step_counts_halve_the_data_iterators_and_change_nothing_else(monkeypatch):
    from keras.src.backend.tensorflow.trainer import TFEpochIterator

    X, y = sorted_binary()
    y = y.astype("float32")
    made = []
    original = TFEpochIterator._get_iterator
    monkeypatch.setattr(TFEpochIterator, "_get_iterator", lambda self: made.append(self) or original(self))
    # Keras' own feed: seeded, every pass of it shuffles alike, so the runs compare batch for batch
    monkeypatch.setattr(KerasRegressor, "_batches", staticmethod(lambda *args: None))

    def fitted() -> tuple[KerasRegressor, int]:
        made.clear()
        reg = KerasRegressor(build_mlp, epochs=4, batch_size=8, random_state=0, verbose=0, steps_per_execution=4)
        return reg.fit(X, y, validation_data=(X[:10], y[:10])), len(made)

    ours, ours_made = fitted()
    monkeypatch.setattr(KerasRegressor, "_fixed_steps", staticmethod(lambda X, fit_args: {}))  # Keras' own counting
    stock, stock_made = fitted()
    assert (ours_made, stock_made) == (2 * (4 + 1), 4 * 4)  # one per pass (+ one spare each) vs four per epoch
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(ours.history_[key], stock.history_[key], rtol=1e-6)
    np.testing.assert_allclose(ours.predict(X), stock.predict(X), rtol=1e-6)


def test_saving_a_model_builds_keras_reference_objects_once_per_process(monkeypatch):
    import pickle

    from keras.src.layers.layer import Layer
    from keras.src.saving import saving_lib

    from hpsearch.models.backend import fresh_session

    X, y = sorted_binary()
    reg = KerasRegressor(build_mlp, epochs=1, random_state=0, verbose=0).fit(X, y.astype("float32"))
    pickle.dumps(reg)
    fresh_session(0)  # clears Keras' global state, where Keras means to keep its skip-sets
    built = []
    original = Layer.__init__
    monkeypatch.setattr(Layer, "__init__", lambda self, *a, **k: built.append(type(self)) or original(self, *a, **k))
    loaded = pickle.loads(pickle.dumps(reg))
    assert Layer not in built  # the bare reference Layer Keras lists the attributes of
    assert saving_lib.get_attr_skipset("Layer") is saving_lib.get_attr_skipset("Layer")
    np.testing.assert_allclose(loaded.predict(X), reg.predict(X), rtol=1e-6)
