"""The Keras backend choice, the search budgets (timeout, patience) and the delivered model (best trial or refit).

JAX runs in subprocesses: Keras fixes its backend on first import, and this test process runs on TensorFlow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
from mlflow.tracking import MlflowClient

from hpsearch.config.loading import parse_study
from hpsearch.errors import ConfigError
from hpsearch.models.backend_choice import JAX_MIN_STEPS, choose_backend, factory_uses_tensorflow, use_backend
from hpsearch.run.plan import final_model
from hpsearch.run.study import run_study
from tests.conftest import local_store, tiny_study, write_study
from tests.test_backend_paths import TORCH

SPACE = {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [1e-3, 1e-2], "log": True}}


def hpsearch(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpsearch", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_auto_picks_jax_for_long_fits_and_tensorflow_for_short_ones(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setattr("hpsearch.models.backend_choice.running_backend", lambda: None)
    assert choose_backend("auto", "mlp", JAX_MIN_STEPS).name == "jax"
    short = choose_backend("auto", "mlp", 160)
    assert short.name == "tensorflow" and "160 batches" in short.why
    assert choose_backend("tensorflow", "mlp", 10**6).name == "tensorflow"  # an explicit choice is obeyed
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert choose_backend("auto", "mlp", 10**6) == choose_backend("auto", "mlp", 10**6)
    assert choose_backend("auto", "mlp", 10**6).why == "$KERAS_BACKEND"


def test_a_factory_module_that_imports_tensorflow_keeps_tensorflow(tmp_path, monkeypatch):
    (tmp_path / "tf_models.py").write_text("import tensorflow as tf\n\ndef build(): ...\n")
    (tmp_path / "plain_models.py").write_text("import keras\n\ndef build(): ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setattr("hpsearch.models.backend_choice.running_backend", lambda: None)
    assert factory_uses_tensorflow("tf_models:build") and not factory_uses_tensorflow("plain_models:build")
    choice = choose_backend("auto", "tf_models:build", 10**6)
    assert choice.name == "tensorflow" and "imports tensorflow" in choice.why


def test_bad_backends_are_refused_naming_the_field():
    import hpsearch.models.backend  # noqa: F401  (Keras now runs on TensorFlow in this process, whatever ran before)

    with pytest.raises(ConfigError, match=r"training.backend: .*torch.*pip install torch|training.backend: .*switch"):
        use_backend("torch")  # not installed here (or, where it is, Keras already runs on TensorFlow)
    with pytest.raises(ConfigError, match="training.backend"):
        parse_study(tiny_study(training={"backend": "theano"}))


def test_an_unknown_backend_exits_2_in_one_paragraph(workdir):
    path = write_study(workdir, tiny_study(training={"backend": "theano"}))
    run = hpsearch("run", str(path), cwd=workdir)
    assert run.returncode == 2 and "training.backend" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("backend", ["jax", TORCH])
def test_a_study_on_another_backend_loads_back_on_tensorflow_in_a_fresh_process(workdir, backend):
    """The whole path on JAX or torch (search, refit, test, MLflow), then the model in a fresh process on the
    default backend, predicting what the study's own process predicted."""
    path = write_study(workdir, tiny_study(name=f"on-{backend}", training={"backend": backend, "epochs": 3},
                                           tracking={"report": False}))
    run = hpsearch("run", str(path), cwd=workdir)
    assert run.returncode == 0, run.stderr
    assert f"Keras backend: {backend}" in run.stdout
    client = MlflowClient(local_store())
    study = client.search_runs([client.get_experiment_by_name(f"on-{backend}").experiment_id],
                               f"tags.mlflow.runName = 'on-{backend}'")[0]
    assert study.data.params["backend"] == backend
    check = textwrap.dedent(f"""
        import json, numpy as np, mlflow.sklearn, hpsearch
        from sklearn.datasets import load_breast_cancer
        X = load_breast_cancer().data[:20].astype("float32")
        a = mlflow.sklearn.load_model("runs:/{study.info.run_id}/model").predict_proba(X)
        b = hpsearch.load_best("on-{backend}").predict_proba(X)
        import keras
        print(keras.config.backend(), np.abs(a - b).max(), a.shape, json.dumps(a[:, 1].tolist()))
    """)
    env = {k: v for k, v in __import__("os").environ.items() if k != "KERAS_BACKEND"}
    env["MLFLOW_TRACKING_URI"] = local_store()
    predicted = {}
    for on in (None, backend):  # the default backend, and the study's own
        loaded = subprocess.run([sys.executable, "-c", check], cwd=workdir, capture_output=True, text=True,
                                env=env if on is None else {**env, "KERAS_BACKEND": on}, timeout=300)
        assert loaded.returncode == 0, loaded.stderr
        running, difference, rows, columns, probabilities = loaded.stdout.split(maxsplit=4)
        assert running == (on or "tensorflow") and float(difference) < 1e-5 and rows + columns == "(20,2)"
        predicted[running] = json.loads(probabilities)
    assert max(abs(a - b) for a, b in zip(predicted["tensorflow"], predicted[backend])) < 1e-4


@pytest.mark.parametrize("strategy", ["random", "optuna"])
def test_the_timeout_stops_the_search_and_the_trial_running_at_the_deadline(workdir, strategy):
    def budget_study(name: str, epochs: int):
        return parse_study(tiny_study(
            name=name, search={"strategy": strategy, "n_trials": 500, "cv": None, "timeout": 10, "storage": None,
                               "space": SPACE},
            training={"epochs": epochs, "early_stopping": False}, tracking={"enabled": False}))

    # trials of a second or two: some finish before the deadline even on a loaded machine; the deadline may fall
    # in the moment between two trials (scoring, recording), so at most one is stopped
    started = time.monotonic()
    result = run_study(budget_study(f"budget-{strategy}", 80), "")
    assert time.monotonic() - started < 60
    assert result.stopped_by.startswith("search.timeout")
    assert 0 < len(result.trials) < 500
    stopped = [t for t in result.trials if t.reason and "search.timeout deadline" in t.reason]
    assert len(stopped) <= 1 and all(t.state == "pruned" for t in stopped)
    assert result.best is not None and result.test_score is not None

    # a trial far longer than the budget: it is the one running at the deadline, stopped there
    started = time.monotonic()
    endless = run_study(budget_study(f"budget-endless-{strategy}", 100_000), "")
    assert time.monotonic() - started < 60
    (trial,) = endless.trials
    assert trial.state == "pruned" and "search.timeout deadline" in trial.reason and endless.best is None


def test_patience_stops_after_trials_that_do_not_improve(workdir):
    study = parse_study(tiny_study(
        name="patient", search={"strategy": "random", "n_trials": 30, "cv": None, "patience": 1, "min_delta": 10.0,
                                "storage": None, "space": SPACE}, tracking={"enabled": False}))
    result = run_study(study, "")
    assert len(result.trials) == 2 and result.stopped_by.startswith("search.patience")


@pytest.mark.parametrize("field, value", [("timeout", 0), ("timeout", -5), ("patience", 0), ("final", "best")])
def test_bad_budgets_are_refused_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"search.{field}"):
        parse_study(tiny_study(search={field: value}))


def test_holdout_can_deliver_the_best_trials_own_model(workdir):
    """Under holdout the best trial trained on exactly the refit's rows: its model is delivered as it is, and its
    validation score is the best trial's. (The default there is the ensemble, test_ensemble.py.)"""
    assert final_model(parse_study(tiny_study(search={"cv": None})), "binary") == "ensemble"
    assert final_model(parse_study(tiny_study(search={"cv": None})), "multilabel") == "best_trial"
    study = parse_study(tiny_study(name="delivered", search={"cv": None, "n_trials": 3, "space": SPACE,
                                                            "final": "best_trial"}, tracking={"report": False}))
    result = run_study(study, "")
    assert result.final == "best_trial"
    assert result.final_valid_score == pytest.approx(result.best.score)
    client = MlflowClient(local_store())
    run = client.get_run(result.study_run_id)
    assert run.data.tags["hpsearch.final"] == "best_trial"
    assert run.data.metrics["final_valid_score"] == pytest.approx(run.data.metrics["best_score"])


def test_cv_refits_by_default_and_best_trial_can_be_asked(workdir):
    assert final_model(parse_study(tiny_study()), "binary") == "refit"
    study = parse_study(tiny_study(name="cv-best", search={"final": "best_trial", "cv": 2, "space": SPACE},
                                   tracking={"enabled": False}))
    result = run_study(study, "")
    assert result.final == "best_trial" and result.best_estimator is not None
