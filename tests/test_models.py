"""The scikeras wrappers (scikit-learn tags, validation data, callbacks) and the chapter's MLP."""

from __future__ import annotations

import numpy as np
import pytest
import scikeras.wrappers
from conftest import chapter_build_model
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, check_cv, cross_validate

from hpsearch.models.backend import keras
from hpsearch.models.mlp import OPTIMIZERS, build_mlp, make_optimizer
from hpsearch.models.wrappers import KerasClassifier, KerasRegressor


def test_stock_scikeras_is_mis_tagged_and_ours_is_not():
    # The trap: scikeras 0.13 predates scikit-learn's tags API.
    assert not is_classifier(scikeras.wrappers.KerasClassifier())
    assert is_classifier(KerasClassifier()) and not is_regressor(KerasClassifier())
    assert is_regressor(KerasRegressor()) and not is_classifier(KerasRegressor())
    y = np.array([0, 1] * 10)
    assert isinstance(check_cv(3, y, classifier=is_classifier(KerasClassifier())), StratifiedKFold)
    assert isinstance(check_cv(3, y, classifier=is_classifier(scikeras.wrappers.KerasClassifier())), KFold)


def sorted_binary(n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Labels sorted by class: plain KFold would give single-class folds, stratified ones do not."""
    rng = np.random.default_rng(0)
    y = np.array([0] * (n // 2) + [1] * (n // 2))
    X = (rng.normal(size=(n, 3)) + y[:, None]).astype("float32")
    return X, y


def test_classifier_searches_stratify():
    X, y = sorted_binary()
    clf = KerasClassifier(build_mlp, epochs=1, verbose=0)
    folds = cross_validate(clf, X, y, cv=3, return_indices=True)["indices"]["test"]
    for test in folds:
        assert np.mean(y[test]) == pytest.approx(0.5)
    search = GridSearchCV(clf, {"model__n_neurons": [2, 3]}, cv=3).fit(X, y)
    assert np.isfinite(search.best_score_)


def test_validation_data_labels_are_encoded_and_fit_callbacks_honoured():
    X, _ = sorted_binary()
    y = np.array(["cat", "dog"] * 30)

    class Count(keras.callbacks.Callback):
        epochs = 0

        def on_epoch_end(self, epoch, logs=None):
            Count.epochs += 1
            assert "val_loss" in logs

    clf = KerasClassifier(build_mlp, epochs=3, verbose=0)
    clf.fit(X, y, validation_data=(X[:10], y[:10]), callbacks=[Count()])
    assert Count.epochs == 3
    assert set(clf.predict(X)) <= {"cat", "dog"}
    assert clf._fit_callbacks == []  # the one-off callbacks are not kept on the estimator


def test_factory_params_settable_without_declaring_them():
    X, y = sorted_binary()
    reg = KerasRegressor(chapter_build_model, input_shape=(3,), epochs=1, verbose=0)
    reg.set_params(n_hidden=2, n_neurons=5)
    cloned = clone(reg)
    assert cloned.get_params()["n_hidden"] == 2
    cloned.fit(X, y.astype("float32"))
    assert len(cloned.model_.layers) == 3
    with pytest.raises(ValueError, match="Invalid parameter"):
        reg.set_params(n_hiden=2)


META = {"X_shape_": (10, 4), "n_features_in_": 4}


@pytest.mark.parametrize("target_type, extra, units, activation, loss", [
    ("continuous", {"n_outputs_": 1}, 1, "linear", "mse"),
    ("continuous-multioutput", {"n_outputs_": 3}, 3, "linear", "mse"),
    ("binary", {"n_classes_": 2}, 1, "sigmoid", "binary_crossentropy"),
    ("multilabel-indicator", {"n_classes_": 5}, 5, "sigmoid", "binary_crossentropy"),
    ("multiclass", {"n_classes_": 7}, 7, "softmax", "sparse_categorical_crossentropy"),
])
def test_mlp_head_follows_the_task(target_type, extra, units, activation, loss):
    model = build_mlp({**META, "target_type_": target_type, **extra}, n_hidden=2, n_neurons=8)
    head = model.layers[-1]
    assert head.units == units and head.activation.__name__ == activation
    assert model.loss == loss
    assert [layer.units for layer in model.layers[:-1]] == [8, 8]


def test_mlp_per_layer_widths_images_and_numpy_scalars():
    meta = {"X_shape_": (10, 28, 28), "target_type_": "multiclass", "n_classes_": 10}
    model = build_mlp(meta, n_neurons=[300, 100], n_hidden=np.int64(5), learning_rate=np.float64(0.01))
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [300, 100, 10]
    assert isinstance(model.layers[0], keras.layers.Flatten)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_with_its_learning_rate(name):
    optimizer = make_optimizer(name, 0.02)
    assert float(optimizer.learning_rate) == pytest.approx(0.02)
    if name in ("momentum", "nesterov"):
        assert optimizer.momentum == pytest.approx(0.9) and optimizer.nesterov == (name == "nesterov")


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="unknown optimizer 'sgdd'"):
        make_optimizer("sgdd", 0.01)


def test_regressor_with_whole_number_target_gets_a_regression_head():
    X, _ = sorted_binary()
    y = (np.arange(60) % 40).astype("float64")  # like scikit-learn's diabetes target
    reg = KerasRegressor(build_mlp, epochs=1, verbose=0).fit(X, y)
    assert reg.model_.layers[-1].units == 1 and reg.model_.loss == "mse"
    assert reg.predict(X).dtype.kind == "f"


def test_steps_per_execution_changes_speed_not_training():
    X, y = sorted_binary()
    y = y.astype("float32")

    def fitted(steps: int) -> KerasRegressor:
        reg = KerasRegressor(build_mlp, epochs=3, batch_size=8, random_state=0, verbose=0, steps_per_execution=steps)
        return clone(reg).fit(X, y, validation_data=(X[:10], y[:10]))  # 60 rows: 8 batches, a partial last one

    one, many = fitted(1), fitted(4)
    assert (one.model_.steps_per_execution, many.model_.steps_per_execution) == (1, 4)
    np.testing.assert_allclose(many.history_["val_loss"], one.history_["val_loss"], rtol=1e-5)
    np.testing.assert_allclose(many.predict(X), one.predict(X), rtol=1e-4, atol=1e-6)
    # predict runs the forward pass directly (no graph traced per model): the numbers are Keras' own
    keras_predict = one.model_.predict(X.astype("float32"), verbose=0).ravel()
    np.testing.assert_allclose(one.predict(X), keras_predict, rtol=1e-6)


@pytest.mark.parametrize("validation", ["data", "split"])
def test_arrays_are_fed_as_keras_would_batch_them_and_reshuffled_every_epoch(monkeypatch, validation):
    from hpsearch.models.backend import array_batches

    X, y = sorted_binary()
    y = y.astype("float32")

    def fitted(**params) -> KerasRegressor:
        held_out = {"validation_data": (X[:10], y[:10])} if validation == "data" else {}
        params.setdefault("validation_split", 0.25 if validation == "split" else 0.0)
        reg = KerasRegressor(build_mlp, epochs=3, batch_size=8, random_state=0, verbose=0, **params)
        return reg.fit(X, y, sample_weight=np.linspace(0.5, 1.5, len(y)), **held_out)

    ours = fitted(shuffle=False)
    with monkeypatch.context() as keras_feed:
        keras_feed.setattr(KerasRegressor, "_batches", staticmethod(lambda *args: None))
        stock = fitted(shuffle=False)
    for key in ("loss", "val_loss"):  # the same batches in the same order, sample weights and held-out rows included
        np.testing.assert_allclose(ours.history_[key], stock.history_[key], rtol=1e-6)
    np.testing.assert_allclose(ours.predict(X), stock.predict(X), rtol=1e-6)

    np.testing.assert_allclose(fitted().history_["loss"], fitted().history_["loss"], rtol=1e-6)  # seeded: repeatable
    keras.utils.set_random_seed(0)
    rows = np.arange(12, dtype="float32")
    batches = array_batches((rows,), 12, shuffle=True)
    passes = [next(iter(batches))[0].numpy().tolist() for _ in range(3)]
    assert sorted(passes[0]) == rows.tolist() and len({tuple(p) for p in passes}) == 3  # a new order every pass


@pytest.mark.parametrize("fit_args", [{"shuffle": "batch"}, {"validation_split": 0.999}])
def test_what_keras_batches_itself_keeps_keras_feed(fit_args):
    X, y = sorted_binary()
    assert KerasRegressor._batches(X, y.astype("float32"), None, fit_args) is None  # Keras' own error, if any
    assert KerasRegressor._batches(list(X), y, None, {}) is None


def test_a_factorys_own_steps_per_execution_wins():
    X, y = sorted_binary()

    def compiled_with_eight(meta):
        model = build_mlp(meta)
        model.compile(loss="mse", optimizer="sgd", steps_per_execution=8)
        return model

    reg = KerasRegressor(compiled_with_eight, epochs=1, verbose=0, steps_per_execution=32).fit(X, y.astype("float32"))
    assert reg.model_.steps_per_execution == 8


def test_the_delivered_model_is_scored_under_the_names_users_look_for():
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from hpsearch.evaluation.metrics import named_metrics

    X, y = load_diabetes(return_X_y=True)
    regression = named_metrics(LinearRegression().fit(X, y), X, y)
    assert set(regression) == {"test_mse", "test_rmse", "test_mae", "test_r2"}
    assert regression["test_rmse"] == pytest.approx(regression["test_mse"] ** 0.5)
    for X, y in (load_breast_cancer(return_X_y=True), load_iris(return_X_y=True)):  # binary, then multiclass
        found = named_metrics(LogisticRegression(max_iter=5000).fit(X, y), X, y, prefix="val_")
        assert set(found) == {"val_accuracy", "val_f1", "val_log_loss", "val_roc_auc"}
        assert 0.9 < found["val_accuracy"] <= 1 and 0.9 < found["val_roc_auc"] <= 1
