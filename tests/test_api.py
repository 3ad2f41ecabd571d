"""``import hpsearch`` inside scikit-learn code: estimators, SearchCV, load_best, tracked like a CLI study."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import chapter_build_model, local_store
from mlflow import MlflowClient
from scipy.stats import expon, reciprocal
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.compose import make_column_transformer
from sklearn.datasets import load_iris
from sklearn.impute import SimpleImputer
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import hpsearch

REPO = Path(__file__).resolve().parents[1]
TINY = {"epochs": 3, "optimizer": "adam", "learning_rate": 0.01}


def load_example():
    spec = importlib.util.spec_from_file_location("pipeline_search", REPO / "examples" / "pipeline_search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def preprocessing():
    return make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["sex"]),
                                   remainder=make_pipeline(SimpleImputer(), StandardScaler()))


def tracked_runs(experiment: str):
    client = MlflowClient(local_store())
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    study = [r for r in runs if r.data.tags.get("hpsearch.role") == "study"]
    trials = [r for r in runs if r.data.tags.get("hpsearch.role") == "trial"]
    return client, study, trials


def test_searchcv_last_step_of_a_pipeline_with_missing_values_and_categories(workdir):
    X_train, X_test, y_train, y_test = load_example().load_table()
    assert X_train["bmi"].isna().any() and not pd.api.types.is_numeric_dtype(X_train["sex"])
    search = hpsearch.SearchCV(
        hpsearch.KerasMLPRegressor(**TINY, early_stopping=2),
        space={"n_hidden": hpsearch.Int(0, 2), "n_neurons": np.arange(1, 100),
               "learning_rate": reciprocal(3e-4, 3e-2)},
        strategy="optuna", n_trials=3, cv=2, experiment="api-last-step")
    pipe = make_pipeline(preprocessing(), search).fit(X_train, y_train)
    assert pipe.predict(X_test).shape == (len(X_test),)

    # scikit-learn's conventions
    assert search.n_trials_ == 3 and search.study_ is not None
    assert search.best_params_ == search.cv_results_["params"][search.best_index_]
    assert search.best_score_ == pytest.approx(np.nanmax(search.cv_results_["mean_test_score"]))
    assert set(search.cv_results_) >= {"params", "param_n_hidden", "mean_test_score", "std_test_score",
                                       "rank_test_score", "split0_test_score", "split1_test_score",
                                       "mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time"}
    assert all(type(v) is int for v in (search.best_params_["n_hidden"], search.best_params_["n_neurons"]))

    # tracked exactly like a CLI study
    client, study, trials = tracked_runs("api-last-step")
    assert len(study) == 1 and len(trials) == 3
    assert all(t.data.tags["mlflow.parentRunId"] == study[0].info.run_id for t in trials)
    for trial in trials:  # a trial pruned (Hyperband, per epoch) in its first fold has no second
        lengths = [len(client.get_metric_history(trial.info.run_id, f"fold{k}/loss")) for k in (0, 1)]
        assert max(lengths) == int(trial.data.metrics["epochs"]) and lengths[0] >= 1
        assert min(lengths) >= 1 or trial.data.tags["hpsearch.state"] == "pruned"
    assert study[0].info.run_id == search.study_run_id_

    # load_best gives what SearchCV fitted (here: the model after preprocessing)
    loaded = hpsearch.load_best("api-last-step")
    features = pipe[:-1].transform(X_test)
    np.testing.assert_allclose(loaded.predict(features), search.best_estimator_.predict(features), rtol=1e-5)


def test_pipeline_inside_searchcv_and_load_best_returns_the_whole_pipeline(workdir):
    X_train, X_test, y_train, _ = load_example().load_table()
    pipe = make_pipeline(preprocessing(), hpsearch.KerasMLPRegressor(**TINY))
    search = hpsearch.SearchCV(pipe, space={"kerasmlpregressor__n_neurons": hpsearch.Int(2, 8)},
                               n_trials=2, cv=2, scoring="neg_mean_squared_error", experiment="api-inside")
    search.fit(X_train, y_train)
    loaded = hpsearch.load_best("api-inside")
    assert type(loaded).__name__ == "Pipeline"
    np.testing.assert_allclose(loaded.predict(X_test), search.best_estimator_.predict(X_test), rtol=1e-5)
    np.testing.assert_allclose(search.predict(X_test), search.best_estimator_.predict(X_test))
    assert search.score(X_test, search.predict(X_test)) == pytest.approx(0.0, abs=1e-6)


def test_tracking_off_writes_nothing_and_classifier_tags_flow_through(workdir):
    X, y = load_iris(return_X_y=True)
    search = hpsearch.SearchCV(hpsearch.KerasMLPClassifier(**TINY), {"n_neurons": [4, 8]},
                               strategy="grid", cv=3, tracking=False)
    assert is_classifier(search)
    search.fit(X, y)
    assert search.n_trials_ == 2 and search.study_run_id_ is None
    assert list(search.classes_) == [0, 1, 2] and search.predict_proba(X[:2]).shape == (2, 3)
    assert not any(workdir.iterdir())


def test_mlp_estimators_are_scikit_learn_citizens(workdir):
    X, y = load_iris(return_X_y=True)
    clf = hpsearch.KerasMLPClassifier(**TINY, n_neurons=6)
    assert is_classifier(clf) and is_regressor(hpsearch.KerasMLPRegressor())
    assert clone(clf).get_params()["n_neurons"] == 6
    assert len(cross_val_score(clf, X, y, cv=3)) == 3
    fitted = clone(clf).fit(X, y)
    for restored in (pickle.loads(pickle.dumps(fitted)), joblib.load(joblib.dump(fitted, workdir / "m.joblib")[0])):
        np.testing.assert_allclose(restored.predict_proba(X), fitted.predict_proba(X), rtol=1e-6)
    # scikit-learn's own searches, with the chapter's space exactly as written
    RandomizedSearchCV(clf, {"n_hidden": [0, 1], "n_neurons": np.arange(1, 100),
                             "learning_rate": reciprocal(3e-4, 3e-2)}, n_iter=2, cv=2).fit(X, y)
    GridSearchCV(make_pipeline(StandardScaler(), clf), {"kerasmlpclassifier__n_hidden": [1, 2]}, cv=2).fit(X, y)


def test_user_factory_wrapped_without_declaring_its_params(workdir):
    X, y = load_iris(return_X_y=True)
    reg = hpsearch.KerasRegressor(chapter_build_model, input_shape=(4,), epochs=2, verbose=0)
    search = hpsearch.SearchCV(reg, {"n_hidden": [1, 2], "n_neurons": hpsearch.Int(2, 6)},
                               n_trials=2, cv=2, tracking=False).fit(X, y.astype(float))
    assert set(search.best_params_) == {"n_hidden", "n_neurons"}
    assert search.best_estimator_.model_.layers[0].units == search.best_params_["n_neurons"]


@pytest.mark.parametrize("space, strategy, message", [
    ({"n_neuron": [4]}, "random", "did you mean 'n_neurons'"),
    ({"learning_rate": expon(scale=0.01)}, "optuna", "cannot search"),
    ({"learning_rate": expon(scale=0.01)}, "grid", "cannot search"),
    ({"n_hidden": {"int": [3, 1]}}, "random", "inverted"),
    ({}, "random", "non-empty"),
])
def test_bad_spaces_are_refused_before_training(workdir, space, strategy, message):
    X, y = load_iris(return_X_y=True)
    search = hpsearch.SearchCV(hpsearch.KerasMLPClassifier(**TINY), space, strategy=strategy, tracking=False)
    with pytest.raises(ValueError, match=f"(?i){message}"):
        search.fit(X, y)


@pytest.mark.parametrize("X, y, message", [
    (pd.DataFrame({"city": ["a", "b"] * 10, "x": range(20)}), [0, 1] * 10, "non-numeric columns \\['city'\\]"),
    (np.array([[1.0, np.nan]] * 20), [0, 1] * 10, "missing or infinite"),
    (np.ones((1, 3)), [1], "1 sample"),
    (np.ones((20, 3)), [0, 1] * 5, "inconsistent numbers of samples: \\[20, 10\\]"),  # scikit-learn's words
])
def test_bad_data_is_refused_before_training(workdir, X, y, message):
    search = hpsearch.SearchCV(hpsearch.KerasMLPClassifier(**TINY), {"n_neurons": [4]}, tracking=False)
    with pytest.raises(ValueError, match=message):
        search.fit(X, np.asarray(y))
    assert not any(workdir.iterdir())


def test_space_objects_are_the_yaml_ones():
    from hpsearch.config.loading import parse_study

    study = parse_study({"name": "x", "data": {"dataset": "iris"},
                         "search": {"space": {"lr": {"float": [3.0e-4, 3.0e-2], "log": True}, "n": [1, 2]}}})
    assert study.search.space["lr"] == hpsearch.Float(3e-4, 3e-2, log=True)
    assert study.search.space["n"] == hpsearch.Categorical([1, 2])
    from hpsearch.space.dimensions import as_dimension
    assert as_dimension(reciprocal(3e-4, 3e-2)) == hpsearch.Float(3e-4, 3e-2, log=True)
    assert as_dimension(np.arange(1, 4)) == hpsearch.Categorical([1, 2, 3])


def test_sample_weights_reach_every_fit(workdir):
    X, y = load_iris(return_X_y=True)
    weights = np.where(y == 0, 0.0, 1.0)  # class 0 weighs nothing: the model never learns it
    search = hpsearch.SearchCV(hpsearch.KerasMLPClassifier(epochs=30, optimizer="adam", learning_rate=0.05,
                                                           validation_split=0.0),
                               {"n_neurons": [16]}, strategy="grid", cv=3, tracking=False)
    search.fit(X, y, sample_weight=weights)
    assert (search.predict(X[y == 0]) != 0).mean() > 0.9
    with pytest.raises(ValueError, match="sample_weight has 3 values"):
        search.fit(X, y, sample_weight=[1, 2, 3])


@pytest.mark.parametrize("module", ["hpsearch.space.dimensions", "hpsearch.run.search_cv",
                                    "hpsearch.models.mlp_estimators", "hpsearch.tracking.reading"])
def test_the_public_docstrings_are_numpydoc_with_examples_that_run(module):
    """What the README's Python section links to: Parameters (or Returns), Examples, and examples that run
    (those that train are marked to skip)."""
    import doctest

    loaded = importlib.import_module(module)
    documented = {"hpsearch.space.dimensions": ["Int", "Float", "Categorical", "Fixed", "Distribution"],
                  "hpsearch.run.search_cv": ["SearchCV"],
                  "hpsearch.models.mlp_estimators": ["KerasMLPRegressor", "KerasMLPClassifier"],
                  "hpsearch.tracking.reading": ["load_best"]}[module]
    for name in documented:
        doc = getattr(loaded, name).__doc__
        assert "Parameters\n    ----------" in doc and "Examples\n    --------" in doc, name
    failed, tried = doctest.testmod(loaded, optionflags=doctest.ELLIPSIS)
    assert failed == 0 and tried > 0
