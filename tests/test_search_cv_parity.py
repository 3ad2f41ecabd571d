"""``hpsearch.SearchCV`` takes what scikit-learn's searches take and behaves the same where they overlap: the
chapter's ``RandomizedSearchCV`` code with only the class swapped, splitters and groups, fit params and metadata
routing, multi-metric scoring and ``refit``, ``error_score``, ``return_train_score``, ``verbose``, ``n_jobs`` (and
joblib's Dask backend), the fitted attributes. Tiny real Keras training, a real MLflow store."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn
from conftest import chapter_build_model, local_store
from mlflow import MlflowClient
from scipy.stats import reciprocal
from sklearn.datasets import load_iris, make_regression
from sklearn.exceptions import FitFailedWarning
from sklearn.model_selection import (
    GroupKFold,
    KFold,
    PredefinedSplit,
    RandomizedSearchCV,
    ShuffleSplit,
    StratifiedKFold,
    TimeSeriesSplit,
)

import hpsearch

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def regression(rows: int = 120):
    X, y = make_regression(rows, 8, noise=5.0, random_state=0)
    return X.astype("float32"), (y / y.std()).astype("float32")


def chapter_regressor():
    return hpsearch.KerasRegressor(chapter_build_model, verbose=0)


def study_and_trials(experiment: str):
    client = MlflowClient(local_store())
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return ([r for r in runs if r.data.tags.get("hpsearch.role") == "study"],
            [r for r in runs if r.data.tags.get("hpsearch.role") == "trial"])


def test_the_chapters_randomized_search_runs_unchanged_with_searchcv_and_is_tracked(workdir):
    """The chapter's code with RandomizedSearchCV's arguments, ``fit(epochs=, validation_data=, callbacks=)``
    included: the same cv_results_ keys as RandomizedSearchCV's, every trial recorded in MLflow."""
    from hpsearch.models.backend import keras

    X, y = regression()
    X_valid, y_valid = X[:30], y[:30]
    param_distribs = {"n_hidden": [0, 1, 2], "n_neurons": np.arange(1, 100), "learning_rate": reciprocal(3e-4, 3e-2)}
    arguments = dict(n_iter=3, cv=3, scoring="neg_mean_squared_error", refit=True, n_jobs=1, random_state=42,
                     error_score=np.nan, return_train_score=True)
    fit_params = dict(epochs=4, validation_data=(X_valid, y_valid),
                      callbacks=[keras.callbacks.EarlyStopping(patience=2)])
    theirs = RandomizedSearchCV(chapter_regressor(), param_distribs, **arguments).fit(X, y, **fit_params)
    ours = hpsearch.SearchCV(chapter_regressor(), param_distribs, experiment="chapter", **arguments).fit(X, y,
                                                                                                      **fit_params)
    assert set(ours.cv_results_) >= set(theirs.cv_results_)
    assert ours.best_params_ == ours.cv_results_["params"][ours.best_index_]
    assert ours.best_score_ == pytest.approx(np.nanmax(ours.cv_results_["mean_test_score"]))
    assert ours.predict(X[:5]).shape == (5,) and ours.n_splits_ == 3 and ours.refit_time_ > 0
    assert ours.best_estimator_.history_["loss"] and len(ours.best_estimator_.history_["loss"]) <= 4  # epochs=4

    study, trials = study_and_trials("chapter")
    assert len(study) == 1 and study[0].info.status == "FINISHED" and len(trials) == 3
    assert all("train_score" in t.data.metrics or t.data.tags["hpsearch.state"] != "finished" for t in trials)


@pytest.mark.parametrize("cv, groups, n_splits", [
    (GroupKFold(n_splits=3), np.arange(120) % 6, 3),
    (TimeSeriesSplit(n_splits=3), None, 3),
    (KFold(n_splits=2, shuffle=True, random_state=0), None, 2),
    (ShuffleSplit(n_splits=1, test_size=0.25, random_state=0), None, 1),
    (PredefinedSplit(np.where(np.arange(120) < 90, -1, 0)), None, 1),
    ([(np.arange(0, 80), np.arange(80, 120)), (np.arange(40, 120), np.arange(0, 40))], None, 2),
])
def test_splitters_and_groups_as_scikit_learn_takes_them(workdir, cv, groups, n_splits):
    X, y = regression()
    search = hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=2), {"n_neurons": [4, 8]}, strategy="grid", cv=cv,
                               tracking=False).fit(X, y, groups=groups)
    assert search.n_splits_ == n_splits
    assert [k for k in search.cv_results_ if k.endswith("_test_score") and k.startswith("split")] == \
        [f"split{k}_test_score" for k in range(n_splits)]


def test_group_folds_keep_each_group_on_one_side(workdir):
    """What GroupKFold is for: every fold's test rows hold groups its training rows do not (read back through
    a splitter that records what it yields)."""
    X, y = regression()
    groups = np.arange(120) // 20
    seen = []

    class Recording(GroupKFold):
        def split(self, X, y=None, groups=None):
            for train, test in super().split(X, y, groups):
                seen.append((set(groups[train]), set(groups[test])))
                yield train, test

    hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=2), {"n_neurons": [4]}, strategy="grid", cv=Recording(3),
                      tracking=False).fit(X, y, groups=groups)
    assert seen and all(not train & test for train, test in seen)


def test_multi_metric_scoring_and_every_kind_of_refit(workdir):
    X, y = regression()
    scoring = {"mse": "neg_mean_squared_error", "mae": "neg_mean_absolute_error"}
    space = {"n_neurons": [2, 16], "learning_rate": [1e-3, 1e-2]}
    search = hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=3), space, strategy="grid", cv=2, scoring=scoring,
                               refit="mae", experiment="multi").fit(X, y)
    results = search.cv_results_
    for name in scoring:
        assert {f"mean_test_{name}", f"std_test_{name}", f"rank_test_{name}", f"split1_test_{name}"} <= set(results)
    assert "mean_test_score" not in results and search.multimetric_ and set(search.scorer_) == set(scoring)
    assert search.best_index_ == int(np.argmin(results["rank_test_mae"]))
    assert search.best_score_ == pytest.approx(results["mean_test_mae"][search.best_index_])
    assert search.score(X, y) == pytest.approx(search.scorer_["mae"](search.best_estimator_, X, y))
    _, trials = study_and_trials("multi")
    assert all({"score_mse", "score_mae"} <= set(t.data.metrics) for t in trials)  # every metric per trial

    def fastest(cv_results):
        return int(np.argmin(cv_results["mean_fit_time"]))

    chosen = hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=3), space, strategy="grid", cv=2, scoring=scoring,
                               refit=fastest, tracking=False).fit(X, y)
    assert chosen.best_index_ == fastest(chosen.cv_results_) and not hasattr(chosen, "best_score_")
    assert chosen.best_params_ == chosen.cv_results_["params"][chosen.best_index_]
    assert hasattr(chosen, "best_estimator_")

    unrefit = hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=3), space, strategy="grid", cv=2, scoring=scoring,
                                refit=False, experiment="unrefit").fit(X, y)
    assert not hasattr(unrefit, "best_estimator_") and not hasattr(unrefit, "best_index_")
    study, _ = study_and_trials("unrefit")
    assert study[0].info.status == "FINISHED"


def test_a_callable_scorer_is_the_score_the_search_maximises(workdir):
    from sklearn.metrics import make_scorer, max_error

    X, y = regression()
    worst_error = make_scorer(max_error, greater_is_better=False)
    search = hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=3), {"n_neurons": [2, 16]}, strategy="grid", cv=2,
                               scoring=worst_error, experiment="callable").fit(X, y)
    assert search.scorer_ is worst_error and not search.multimetric_
    assert search.best_score_ == pytest.approx(np.max(search.cv_results_["mean_test_score"]))
    assert search.score(X, y) == pytest.approx(-max_error(y, search.predict(X)), rel=1e-5)
    study, _ = study_and_trials("callable")
    assert "max_error" in study[0].data.params["scoring"]


def test_error_score_and_the_failures_it_counts(workdir):
    X, y = regression()
    space = {"activation": ["relu", "not-an-activation"]}
    search = hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=2), space, strategy="grid", cv=2, tracking=False,
                               error_score=-99.0, return_train_score=True)
    with pytest.warns(FitFailedWarning, match="1 of the 2 candidates failed.*error_score=-99.0"):
        search.fit(X, y)
    failed = list(search.cv_results_["state"]).index("failed")
    assert search.cv_results_["mean_test_score"][failed] == -99.0 and search.cv_results_["rank_test_score"][failed] == 2
    assert search.best_params_ == {"activation": "relu"}

    with pytest.raises(ValueError, match="not-an-activation"):
        hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=2), space, strategy="grid", cv=2, tracking=False,
                          error_score="raise").fit(X, y)
    with pytest.raises(ValueError, match="All the 1 candidates failed"):
        hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=2), {"activation": ["not-an-activation"]}, strategy="grid",
                          cv=2, tracking=False).fit(X, y)


def test_verbose_two_prints_a_line_per_trial(workdir, capsys):
    X, y = regression()
    hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=2), {"n_neurons": [4, 8]}, strategy="grid", cv=2,
                      tracking=False, verbose=2).fit(X, y)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[trial ")]
    assert len(lines) == 2 and lines[0].startswith("[trial 1/2] finished score=") and "n_neurons=4" in lines[0]


def test_n_jobs_runs_random_and_grid_fits_in_processes_and_optuna_as_workers(workdir):
    X, y = regression()
    space = {"n_neurons": hpsearch.Int(2, 16)}
    grid = hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=2), {"n_neurons": [2, 4, 8]}, strategy="grid", cv=2,
                             n_jobs=2, experiment="jobs-grid").fit(X, y)
    assert list(grid.cv_results_["state"]) == ["finished"] * 3
    study, trials = study_and_trials("jobs-grid")
    assert study[0].data.params["execution.n_jobs"] == "2" and len(trials) == 3

    optuna_search = hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=2), space, strategy="optuna", n_iter=4,
                                      cv=2, n_jobs=2, experiment="jobs-optuna").fit(X, y)
    assert len(optuna_search.study_.trials) == 4 and optuna_search.n_trials_ == 4  # a temporary storage, kept in memory
    study, trials = study_and_trials("jobs-optuna")
    assert len(study) == 1 and study[0].info.status == "FINISHED"
    assert sorted(int(t.data.tags["hpsearch.trial"]) for t in trials) == [0, 1, 2, 3]
    assert len({t.data.tags["hpsearch.process"] for t in trials}) == 2  # two worker processes shared the trials


def test_a_joblib_context_chooses_where_the_fits_run(workdir):
    """``with parallel_config(n_jobs=2)`` and ``with parallel_backend("dask")`` (a real local Dask cluster), as
    scikit-learn's searches honour them."""
    distributed = pytest.importorskip("distributed")
    from joblib import parallel_backend, parallel_config

    X, y = regression()
    with parallel_config(n_jobs=2):
        hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=2), {"n_neurons": [2, 4]}, strategy="grid", cv=2,
                          experiment="context-loky").fit(X, y)
    assert study_and_trials("context-loky")[0][0].data.params["execution.n_jobs"] == "2"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster), parallel_backend("dask"):
            search = hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=2), {"n_neurons": [2, 4]}, strategy="grid",
                                       cv=2, experiment="context-dask").fit(X, y)
    study, trials = study_and_trials("context-dask")
    assert study[0].data.params["execution.backend"] == "dask" and len(trials) == 2
    assert list(search.cv_results_["state"]) == ["finished", "finished"]


def test_metadata_routing_sends_sample_weight_where_it_was_requested(workdir):
    X, y = load_iris(return_X_y=True)
    weights = np.where(y == 0, 0.0, 1.0)  # class 0 weighs nothing: a model that got the weights never predicts it
    estimator = hpsearch.KerasMLPClassifier(epochs=30, optimizer="adam", learning_rate=0.05, validation_split=0.0)
    with sklearn.config_context(enable_metadata_routing=True):
        search = hpsearch.SearchCV(estimator.set_fit_request(sample_weight=True), {"n_neurons": [16]},
                                   strategy="grid", cv=StratifiedKFold(3), tracking=False)
        search.fit(X, y, sample_weight=weights)
        assert (search.predict(X[y == 0]) != 0).mean() > 0.9
        unrequested = hpsearch.SearchCV(hpsearch.KerasMLPClassifier(epochs=2), {"n_neurons": [4]}, strategy="grid",
                                        tracking=False)
        with pytest.raises(ValueError, match="sample_weight"):
            unrequested.fit(X, y, sample_weight=weights)


def test_fitted_attributes_and_delegation(workdir):
    X, y = load_iris(return_X_y=True)
    frame = pd.DataFrame(X, columns=["sl", "sw", "pl", "pw"])
    search = hpsearch.SearchCV(hpsearch.KerasMLPClassifier(epochs=2), {"n_neurons": [4, 8]}, strategy="grid", cv=2,
                               scoring="accuracy", tracking=False).fit(frame, y)
    assert list(search.classes_) == [0, 1, 2] and search.n_features_in_ == 4
    assert list(search.feature_names_in_) == ["sl", "sw", "pl", "pw"]
    assert not search.multimetric_ and search.n_splits_ == 2 and callable(search.scorer_)
    assert search.predict_proba(frame[:3]).shape == (3, 3)
    for method in ("predict_log_proba", "decision_function", "transform"):
        assert hasattr(search, method) == hasattr(search.best_estimator_, method)
    assert 0 <= search.score(frame, y) <= 1


def test_final_best_trial_and_ensemble_on_a_holdout_split(workdir):
    X, y = regression()
    holdout = ShuffleSplit(n_splits=1, test_size=0.25, random_state=0)
    space = {"n_neurons": [2, 4, 8]}
    ensemble = hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=3), space, strategy="grid", cv=holdout,
                                 final="ensemble", ensemble_size=3, tracking=False).fit(X, y)
    assert type(ensemble.best_estimator_).__name__ == "VotingRegressor"
    best_trial = hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=3), space, strategy="grid", cv=holdout,
                                   final="best_trial", tracking=False).fit(X, y)
    assert best_trial.best_estimator_.n_neurons == best_trial.best_params_["n_neurons"]
    with pytest.raises(ValueError, match="final='ensemble' chooses its members on holdout rows"):
        hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=3), space, cv=3, final="ensemble").fit(X, y)


@pytest.mark.parametrize("arguments, fit, message", [
    ({"n_jobs": 0}, {}, "n_jobs == 0 has no meaning"),
    ({"cv": 1}, {}, "n_splits=2 or more"),  # KFold refuses one fold (one split of a splitter is a holdout)
    ({"cv": []}, {}, "yields no \\(train, test\\) split"),
    ({"cv": KFold(2)}, {"groups": [0, 1, 2]}, "groups has 3 values for 120 rows"),
    ({"scoring": "neg_mean_sqared_error"}, {}, "not a scikit-learn scorer \\(did you mean 'neg_mean_squared_error'"),
    ({"scoring": "roc_auc"}, {}, "'roc_auc' cannot score this estimator's target: it scores classification"),
    ({"scoring": ["r2", "neg_mean_squared_error"], "refit": "mae"}, {},
     "the parameter refit must be set to a scorer key"),
    ({"error_score": "rase"}, {}, "error_score must be the string 'raise' or a numeric value"),
    ({"n_iter": 3, "n_trials": 4}, {}, "n_iter=3 and n_trials=4 are the same setting"),
    ({"final": "best"}, {}, "final must be one of refit, best_trial, ensemble"),
    ({"execution": {"backend": "spark"}}, {}, "invalid execution settings.*backend"),
    ({}, {"sample_weight": [1.0, 2.0]}, "sample_weight has 2 values for 120 rows"),
])
def test_bad_arguments_are_refused_before_any_training(workdir, arguments, fit, message):
    X, y = regression()
    search = hpsearch.SearchCV(hpsearch.KerasMLPRegressor(epochs=2), {"n_neurons": [4]}, strategy="grid",
                               **arguments)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitFailedWarning)
        with pytest.raises(ValueError, match=message):
            search.fit(X, y, **fit)
    assert not list(workdir.iterdir())  # nothing recorded: refused before MLflow was opened


def test_the_grouped_and_time_series_example_runs(workdir):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "grouped_and_time_series.py"
    spec = importlib.util.spec_from_file_location("grouped_and_time_series", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    grouped, forecast = module.main(epochs=3, n_trials=2)
    assert grouped.n_splits_ == 4 and forecast.n_splits_ == 4
    assert {"mean_test_mse", "mean_test_mae"} <= set(grouped.cv_results_)
    assert len(study_and_trials("grouped-example")[1]) == 2 and len(study_and_trials("time-series-example")[1]) == 2


def test_successive_halving_in_the_python_door(workdir):
    """strategy="halving" with fit(epochs=9): 6 candidates at 3 epochs, the best 2 at 9 (the epochs a search param
    of each trial, under the pipeline step's name); the delivered model is the last round's best, refit at 9."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = regression()
    pipe = make_pipeline(StandardScaler(), hpsearch.KerasMLPRegressor(epochs=2))
    search = hpsearch.SearchCV(pipe, {"kerasmlpregressor__n_neurons": hpsearch.Int(2, 32)}, strategy="halving",
                               n_trials=6, cv=2, experiment="halving-api").fit(X, y, kerasmlpregressor__epochs=9)
    epochs = list(search.cv_results_["param_kerasmlpregressor__epochs"])
    assert epochs == [3] * 6 + [9] * 2
    assert search.best_index_ >= 6 and search.best_params_["kerasmlpregressor__epochs"] == 9
    assert len(search.best_estimator_[-1].history_["loss"]) == 9
    assert len(study_and_trials("halving-api")[1]) == 8
