"""``search.final: ensemble``: greedy ensemble selection over the trials' models, delivered as one MLflow model."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_breast_cancer, make_regression
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import get_scorer
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from hpsearch.config.loading import parse_study
from hpsearch.errors import ConfigError
from hpsearch.models.ensemble import select_ensemble
from hpsearch.run.plan import plan_study
from hpsearch.run.study import run_study
from tests.conftest import local_store, tiny_study, write_study

SPACE = {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [1e-3, 3e-2], "log": True}}


def _pool(models, X, y, X_valid, y_valid, scoring):
    scorer = get_scorer(scoring)
    fitted = [m.fit(X, y) for m in models]
    ranked = sorted(enumerate(fitted), key=lambda item: -scorer(item[1], X_valid, y_valid))
    return ranked, scorer


def test_greedy_selection_never_scores_below_the_best_member_and_weights_its_picks():
    X, y = make_regression(400, 6, noise=20.0, random_state=0)
    models = [Ridge(alpha=a) for a in (0.1, 100.0)] + [DecisionTreeRegressor(max_depth=d, random_state=d)
                                                       for d in (3, 5, 8)]
    pool, scorer = _pool(models, X[:300], y[:300], X[300:], y[300:], "neg_mean_squared_error")
    selection = select_ensemble(pool, X[300:], y[300:], "neg_mean_squared_error", size=5)
    best_single = scorer(pool[0][1], X[300:], y[300:])
    assert selection.score >= best_single
    assert selection.score == pytest.approx(scorer(selection.estimator, X[300:], y[300:]))
    assert next(iter(selection.weights)) == pool[0][0]  # the first pick is the best single model
    assert sum(selection.weights.values()) <= 5 and set(selection.weights) <= {n for n, _ in pool}
    again = pickle.loads(pickle.dumps(selection.estimator))
    np.testing.assert_allclose(again.predict(X[300:]), selection.estimator.predict(X[300:]))


def test_classifiers_are_combined_by_soft_voting():
    X, y = load_breast_cancer(return_X_y=True)
    models = [LogisticRegression(C=c, max_iter=5000) for c in (0.01, 1.0)] + [DecisionTreeClassifier(max_depth=3)]
    pool, scorer = _pool(models, X[:400], y[:400], X[400:], y[400:], "neg_log_loss")
    selection = select_ensemble(pool, X[400:], y[400:], "neg_log_loss", size=4)
    assert selection.score >= scorer(pool[0][1], X[400:], y[400:])
    probabilities = selection.estimator.predict_proba(X[400:])
    assert probabilities.shape == (len(X) - 400, 2) and np.allclose(probabilities.sum(axis=1), 1)
    assert set(selection.estimator.predict(X[400:])) <= {0, 1}


def test_a_holdout_study_delivers_the_ensemble_as_one_mlflow_model(workdir):
    """Tracked end to end: the study run says which trials make the ensemble, its validation score is at least the
    best trial's, and the model loads back in a fresh process with mlflow.sklearn and load_best and predicts."""
    study = parse_study(tiny_study(name="ensembled", search={"cv": None, "n_trials": 4, "final": "ensemble",
                                                             "ensemble_size": 3, "space": SPACE},
                                   tracking={"report": False}))
    result = run_study(study, "")
    assert result.final == "ensemble" and result.ensemble
    assert set(result.ensemble) <= {t.number for t in result.finished}
    assert result.final_valid_score >= result.best.score
    run = MlflowClient(local_store()).get_run(result.study_run_id)
    assert run.data.tags["hpsearch.final"] == "ensemble"
    assert {int(k): v for k, v in json.loads(run.data.tags["hpsearch.ensemble"]).items()} == result.ensemble
    assert run.data.metrics["final_valid_score"] >= run.data.metrics["best_score"]
    X = load_breast_cancer().data[:15].astype("float32")
    expected = result.best_estimator.predict_proba(X)
    check = textwrap.dedent(f"""
        import numpy as np, mlflow.sklearn, hpsearch
        from sklearn.datasets import load_breast_cancer
        X = load_breast_cancer().data[:15].astype("float32")
        a = mlflow.sklearn.load_model("runs:/{result.study_run_id}/model").predict_proba(X)
        b = hpsearch.load_best("ensembled").predict_proba(X)
        print(np.abs(a - b).max(), *a[:, 1])
    """)
    loaded = subprocess.run([sys.executable, "-c", check], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    difference, *positive = map(float, loaded.stdout.split())
    assert difference < 1e-6
    np.testing.assert_allclose(positive, expected[:, 1], atol=1e-5)


def test_more_members_asked_than_trials_finished_uses_those_and_says_so(workdir, caplog):
    study = parse_study(tiny_study(name="few", search={"cv": None, "n_trials": 2, "final": "ensemble",
                                                       "ensemble_size": 10, "space": SPACE},
                                   tracking={"enabled": False}))
    result = run_study(study, "")
    assert result.final == "ensemble" and len(result.ensemble) <= 2
    assert "search.ensemble_size is 10 but only 2 finished trials" in caplog.text


@pytest.mark.parametrize("search, words", [
    ({"final": "ensemble", "cv": 2}, "search.cv: null"),
    ({"final": "ensemble", "cv": None, "ensemble_size": 0}, "search.ensemble_size"),
])
def test_an_ensemble_that_cannot_be_made_is_refused_naming_the_field(workdir, search, words):
    with pytest.raises(ConfigError, match=words):
        plan_study(parse_study(tiny_study(search=search)))


def test_the_cli_names_the_ensembles_members_and_exits_2_on_a_cv_ensemble(workdir):
    good = write_study(workdir, tiny_study(name="cli-ens", search={"cv": None, "n_trials": 3, "final": "ensemble",
                                                                    "space": SPACE}, tracking={"report": False}))
    run = subprocess.run([sys.executable, "-m", "hpsearch", "run", str(good)], cwd=workdir, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "test score of the ensemble of trials" in run.stdout
    bad = write_study(workdir, tiny_study(name="cli-ens-cv", search={"final": "ensemble", "cv": 2}), "bad.yaml")
    refused = subprocess.run([sys.executable, "-m", "hpsearch", "run", str(bad)], cwd=workdir, capture_output=True,
                             text=True, timeout=600)
    assert refused.returncode == 2 and "search.final" in refused.stderr and "Traceback" not in refused.stderr


def test_trial_models_from_other_processes_are_loaded_from_their_records(workdir):
    """A re-run of a finished study trains nothing: every member of the ensemble it delivers is a model the first
    run trained, loaded back from its trial's record instead of refitted."""
    study = tiny_study(name="grown", search={"strategy": "optuna", "cv": None, "n_trials": 3, "sampler": "random",
                                             "pruner": "none", "storage": "sqlite:///optuna.db", "space": SPACE},
                       tracking={"report": False})
    first = run_study(parse_study(study), "")
    second = run_study(parse_study(study), "")
    assert len(second.trials) == 3 and second.final == "ensemble"
    assert set(second.ensemble) <= {t.number for t in first.finished}
    assert second.final_valid_score >= second.best.score
    assert second.final_valid_score == pytest.approx(first.final_valid_score, abs=1e-6)
