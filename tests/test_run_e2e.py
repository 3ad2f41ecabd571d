"""End to end: real Keras training, real MLflow (a server subprocess and the embedded SQLite store)."""

from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import local_store, tiny_study, write_study
from mlflow import MlflowClient

import hpsearch
from hpsearch.cli.main import main
from hpsearch.config.loading import load_study, parse_study
from hpsearch.data.loading import load_dataset
from hpsearch.run.study import run_study
from hpsearch.space.space import SearchSpace

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def study_runs(client: MlflowClient, experiment: str) -> tuple:
    """(study run, its child runs) of an experiment, as a user browsing MLflow finds them."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    studies = [r for r in runs if r.data.tags.get("hpsearch.role") == "study"]
    assert len(studies) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == studies[0].info.run_id]
    return studies[0], sorted(children, key=lambda r: int(r.data.tags["hpsearch.trial"]))


def test_study_against_real_mlflow_server(mlflow_server, workdir):
    raw = tiny_study(name="e2e-server", tracking__uri=mlflow_server, search__n_trials=3)
    path = write_study(workdir, raw)
    study = load_study(path)
    result = run_study(study, path.read_text())

    client = MlflowClient(mlflow_server)
    study_run, trials = study_runs(client, "e2e-server")
    assert len(trials) == 3 == len(result.trials)
    assert study_run.info.status == "FINISHED"
    assert not (workdir / "mlflow.db").exists()  # everything went to the server

    expected_params = list(SearchSpace(study.search.space).sample(3, study.seed))
    for trial, run, params in zip(result.trials, trials, expected_params):
        assert run.info.status == "FINISHED" and run.data.tags["hpsearch.state"] == "finished"
        assert {k: run.data.params[k] for k in params} == {k: str(v) for k, v in params.items()}
        for fold, epochs in enumerate(trial.fold_epochs):
            for metric in ("loss", "val_loss", "accuracy", "val_accuracy"):
                history = client.get_metric_history(run.info.run_id, f"fold{fold}/{metric}")
                assert [m.step for m in history] == list(range(epochs))
        # under Keras' own name, the mean over the folds that reached each epoch: one chart overlays every trial
        folds = [{m.step: m.value for m in client.get_metric_history(run.info.run_id, f"fold{k}/val_loss")}
                 for k in range(len(trial.fold_epochs))]
        mean = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_loss")}
        assert sorted(mean) == list(range(max(trial.fold_epochs)))
        assert mean == pytest.approx({step: np.mean([f[step] for f in folds if step in f]) for step in mean})
        assert run.data.metrics["score"] == pytest.approx(trial.score)
        assert run.data.metrics["epochs"] == max(trial.fold_epochs)
        # findable by its params; named validation metrics (the mean over folds); the data it trained on
        assert run.info.run_name == f"trial-{trial.number:03d} " + ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        assert run.data.metrics["val_accuracy"] == pytest.approx(trial.score)  # the study's scorer is accuracy
        assert {"val_f1", "val_log_loss", "val_roc_auc"} <= set(run.data.metrics)
        assert [(d.dataset.name, d.tags[0].value) for d in run.inputs.dataset_inputs] == [
            ("breast_cancer-training", "training")]  # cross-validated: the folds come from the training split

    # The trial model (first fold's) loads back and reproduces its logged fold score.
    data = load_dataset(study.data, study.seed)
    from sklearn.model_selection import StratifiedKFold
    _, test_idx = next(StratifiedKFold(2).split(data.X_train, data.y_train))
    mlflow.set_tracking_uri(mlflow_server)
    first = trials[0]
    model = mlflow.sklearn.load_model(f"runs:/{first.info.run_id}/model")
    accuracy = float((model.predict(data.X_train[test_idx]) == data.y_train[test_idx]).mean())
    assert accuracy == pytest.approx(first.data.metrics["fold0/score"])
    served = mlflow.pyfunc.load_model(f"runs:/{first.info.run_id}/model")  # what `mlflow models serve` loads
    np.testing.assert_array_equal(served.predict(data.X_train[test_idx]), model.predict(data.X_train[test_idx]))

    # The study run: best params/score, test score, the study file, and the refit best model.
    best = result.best
    assert study_run.data.metrics["best_score"] == pytest.approx(best.score)
    assert study_run.data.metrics["test_score"] == pytest.approx(result.test_score)
    # the test result by the names users look for (a classifier: accuracy, F1, log loss, ROC AUC)
    assert study_run.data.metrics["test_accuracy"] == pytest.approx(result.test_score)  # its scorer is accuracy
    assert {"test_f1", "test_log_loss", "test_roc_auc"} <= set(study_run.data.metrics)
    assert study_run.data.tags["hpsearch.best_run_id"] == best.run_id
    assert f"| {best.number} | {best.score:.5g} |" in study_run.data.tags["mlflow.note.content"]  # its description
    inputs = {d.tags[0].value: d.dataset for d in study_run.inputs.dataset_inputs}
    assert sorted(inputs) == ["test", "training", "validation"]  # validation: where the delivered model is scored
    assert json.loads(inputs["test"].profile)["num_rows"] == len(data.X_test)
    assert study_run.data.params["strategy"] == "random"
    assert "tensorflow" in "".join(study_run.data.tags)
    artifacts = {a.path for a in client.list_artifacts(study_run.info.run_id)}
    assert {"study.yaml", "model", "trials.json"} <= artifacts
    mlflow.set_experiment(experiment_id=study_run.info.experiment_id)
    table = mlflow.load_table("trials.json", run_ids=[study_run.info.run_id])  # MLflow's own table of the trials
    assert sorted(table["trial"]) == sorted(t.number for t in result.trials)
    assert {"state", "score", "epochs", "duration_s", "n_neurons"} <= set(table.columns)
    loaded = mlflow.sklearn.load_model(f"runs:/{study_run.info.run_id}/model")
    np.testing.assert_array_equal(loaded.predict(data.X_test), result.best_estimator.predict(data.X_test))
    # registered as <study>-best with the alias champion; float64 input works on the float32-trained model
    champion = client.get_model_version_by_alias("e2e-server-best", "champion")
    assert champion.run_id == study_run.info.run_id
    registered = hpsearch.load_best("e2e-server-best", tracking_uri=mlflow_server)
    np.testing.assert_array_equal(registered.predict(data.X_test.astype("float64")),
                                  result.best_estimator.predict(data.X_test))
    np.testing.assert_allclose(loaded.predict_proba(data.X_test), result.best_estimator.predict_proba(data.X_test),
                               rtol=1e-6)


@pytest.mark.parametrize("strategy", ["random", "grid", "optuna"])
def test_cli_strategies_on_embedded_store(workdir, strategy, capsys):
    raw = tiny_study(name=f"cli-{strategy}", search__grid_points=2,
                     search__space={"n_neurons": {"int": [4, 8]}, "learning_rate": 0.003})
    path = write_study(workdir, raw)
    assert main(["run", str(path), "--set", f"search.strategy={strategy}"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    experiment = MlflowClient(local_store()).get_experiment_by_name(f"cli-{strategy}")
    # the UI's model-training mode, on the experiment MLflow 3 tags as model development
    address = f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
    assert "best trials" in out and f"open the UI: hpsearch ui, then {address}" in out
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert main(["best", f"cli-{strategy}"]) == 0
    out = capsys.readouterr().out
    assert "best_score" in out and "test_score" in out and f"models:/cli-{strategy}-best@champion" in out
    assert f"/#/experiments/{experiment.experiment_id}/runs/" in out and "workflowType=machine_learning" in out

    client = MlflowClient(local_store())
    study_run, trials = study_runs(client, f"cli-{strategy}")
    assert len(trials) == 2  # grid: n_neurons at 2 points; random/optuna: n_trials=2
    assert all(t.data.tags["hpsearch.state"] == "finished" for t in trials)
    assert study_run.data.params["strategy"] == strategy
    assert (workdir / "mlartifacts").is_dir()
    if strategy == "grid":
        assert sorted(int(t.data.params["n_neurons"]) for t in trials) == [4, 8]


def test_a_halving_study_file_trains_rounds_of_fewer_candidates_for_more_epochs(workdir, capsys):
    """search.strategy: halving with 4 candidates, factor 2, 4 epochs: 4 trials of 1 epoch, 2 of 2, 1 of 4; each
    trial run says its epochs; the delivered model is the last round's."""
    raw = tiny_study(name="halving", search__strategy="halving", search__n_trials=4, search__halving_factor=2,
                     search__cv=None, training__early_stopping=None)
    assert main(["run", str(write_study(workdir, raw))]) == 0
    study_run, trials = study_runs(MlflowClient(local_store()), "halving")
    epochs = sorted(int(t.data.params["epochs"]) for t in trials)
    assert epochs == [1, 1, 1, 1, 2, 2, 4]
    assert all(int(t.data.metrics["epochs"]) == int(t.data.params["epochs"]) for t in trials)
    (last,) = [t for t in trials if t.data.params["epochs"] == "4"]
    assert study_run.data.tags["hpsearch.best_trial"] == last.data.tags["hpsearch.trial"]


def test_optuna_rerun_resumes_same_study(workdir):
    raw = tiny_study(name="resume", search__strategy="optuna", search__n_trials=2, search__cv=None)
    path = write_study(workdir, raw)
    assert main(["run", str(path)]) == 0
    assert main(["run", str(path), "--set", "search.n_trials=3"]) == 0

    import optuna
    stored = optuna.load_study(study_name="resume", storage=local_store("optuna.db"))
    assert len(stored.trials) == 3
    study_run, trials = study_runs(MlflowClient(local_store()), "resume")
    assert [t.data.tags["hpsearch.trial"] for t in trials] == ["0", "1", "2"]
    assert study_run.info.status == "FINISHED"
    # holdout mode: curves carry no fold prefix
    history = MlflowClient(local_store()).get_metric_history(trials[0].info.run_id, "val_loss")
    assert len(history) == int(trials[0].data.metrics["epochs"])
    # holdout: each trial trained on the training split and was scored on the validation split; the study run
    # holds every split, once though the study ran twice
    for trial in trials:
        assert sorted(d.tags[0].value for d in trial.inputs.dataset_inputs) == ["training", "validation"]
    assert sorted(d.tags[0].value for d in study_run.inputs.dataset_inputs) == ["test", "training", "validation"]


def test_failing_trials_are_recorded_and_the_study_goes_on(workdir, monkeypatch):
    (workdir / "flaky_models.py").write_text(textwrap.dedent("""
        from hpsearch.models.mlp import build_mlp

        def build_model(meta, n_neurons=8, explode=False):
            if explode:
                raise RuntimeError("boom: this architecture cannot be built")
            return build_mlp(meta, n_neurons=n_neurons, optimizer="adam")
    """))
    monkeypatch.syspath_prepend(str(workdir))
    sys.modules.pop("flaky_models", None)
    raw = tiny_study(name="flaky", model={"factory": "flaky_models:build_model"}, search__strategy="grid",
                     search__space={"explode": [False, True]})
    study = parse_study(raw)
    result = run_study(study, "")
    states = {t.params["explode"]: t for t in result.trials}
    assert states[False].state == "finished" and states[True].state == "failed"
    assert "boom" in states[True].reason
    _, trials = study_runs(MlflowClient(local_store()), "flaky")
    failed = [t for t in trials if t.data.tags["hpsearch.state"] == "failed"]
    assert len(failed) == 1 and failed[0].info.status == "FAILED"
    assert "RuntimeError: boom" in failed[0].data.tags["hpsearch.reason"]
    assert result.test_score is not None


def test_nan_loss_fails_the_trial_and_all_failed_exits_nonzero(workdir, capsys):
    raw = tiny_study(name="diverge", data={"dataset": "diabetes"}, search__n_trials=1, search__cv=None,
                     model={"factory": "mlp", "params": {"optimizer": "sgd"}},
                     search__space={"learning_rate": 1.0e6}, training__early_stopping=False)
    path = write_study(workdir, raw)
    assert main(["run", str(path)]) == 1
    captured = capsys.readouterr()
    assert "every trial" in captured.err and "NaN" in captured.out
    study_run, trials = study_runs(MlflowClient(local_store()), "diverge")
    assert trials[0].data.tags["hpsearch.state"] == "failed"
    assert "NaN" in trials[0].data.tags["hpsearch.reason"]
    assert study_run.info.status == "FAILED"


def test_same_seed_same_candidates_and_scores(workdir):
    raw = tiny_study(name="seeded", search__cv=None)
    first = run_study(parse_study(raw), "")
    second = run_study(parse_study({**raw, "name": "seeded-again"}), "")
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    for a, b in zip(first.trials, second.trials):
        assert math.isclose(a.score, b.score, abs_tol=1e-6)


def test_chapter_california_study_on_the_real_file(workdir, cal_housing):
    """The chapter's study file as shipped, shrunk by --set to seconds, on the raw StatLib file."""
    study = load_study(REPO / "studies" / "california_housing.yaml", [
        f"data.path={cal_housing}", "data.max_rows=3000", "search.n_trials=2", "training.epochs=3"])
    result = run_study(study, "")
    assert study.search.space["learning_rate"].log
    assert len(result.trials) == 2 and result.best is not None
    assert result.scoring == "neg_mean_squared_error" and result.test_score < 0
    study_run, trials = study_runs(MlflowClient(local_store()), "california-housing-chapter10")
    assert study_run.data.params["data.n_features"] == "[8]"
    assert all(0 <= int(t.data.params["n_hidden"]) <= 3 for t in trials)


def test_ui_command_serves_the_local_store(workdir):
    import subprocess

    from conftest import free_port, wait_for_http

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "hpsearch", "ui", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process)
    finally:
        process.terminate()
        process.wait(timeout=30)
    import requests

    with pytest.raises(requests.ConnectionError):  # stopping hpsearch ui stopped the UI: no orphan server
        requests.get(f"http://127.0.0.1:{port}/health", timeout=5)


def test_a_trial_run_opens_behind_training_and_its_id_reaches_the_result(workdir, monkeypatch):
    """start_trial does not wait for MLflow: the run is created on the upload thread; end_trial gives its id."""
    import threading

    from hpsearch.results import StudyResult, TrialResult
    from hpsearch.tracking.mlflow_tracker import MlflowTracker

    tracker = MlflowTracker(local_store(), "opening", log_models=False)
    tracker.start_study("opening", {}, "", resume=False)
    creators, create_run = [], tracker.client.create_run
    monkeypatch.setattr(tracker.client, "create_run", lambda *args, **kwargs: (
        creators.append(threading.current_thread().name), create_run(*args, **kwargs))[1])
    run = tracker.start_trial(0, {"n_neurons": 3})
    result = TrialResult(number=0, params={"n_neurons": 3}, fold_scores=[-0.5], fold_epochs=[1])
    tracker.end_trial(run, result)
    tracker.end_study(StudyResult("opening", [result], "neg_mean_squared_error"), {})

    assert len(creators) == 1 and creators[0].startswith("hpsearch-mlflow")
    study, (trial,) = study_runs(MlflowClient(local_store()), "opening")
    assert result.run_id == trial.info.run_id and trial.data.params == {"n_neurons": "3"}
    assert study.data.tags["hpsearch.best_run_id"] == trial.info.run_id


def test_curves_sent_behind_training_arrive_once_each_and_in_order(workdir, monkeypatch):
    """Curves go out on the upload thread while the trial keeps logging: no value lost, none sent twice."""
    import hpsearch.tracking._run as buffered
    from hpsearch.results import StudyResult, TrialResult
    from hpsearch.tracking.mlflow_tracker import MlflowTracker

    monkeypatch.setattr(buffered, "_FLUSH_SECONDS", 0.001)  # a send behind almost every epoch
    tracker = MlflowTracker(local_store(), "curves", log_models=False)
    tracker.start_study("curves", {}, "", resume=False)
    run = tracker.start_trial(0, {"n_neurons": 3})
    for epoch in range(1500):
        run.log_metrics({"loss": 1.0 / (epoch + 1), "val_loss": 2.0 / (epoch + 1)}, step=epoch)
    result = TrialResult(number=0, params={"n_neurons": 3}, fold_scores=[-0.5], fold_epochs=[1500])
    tracker.end_trial(run, result)
    tracker.end_study(StudyResult("curves", [result], "neg_mean_squared_error"), {})

    client = MlflowClient(local_store())
    _, (trial,) = study_runs(client, "curves")
    for key, scale in (("loss", 1.0), ("val_loss", 2.0)):
        history = sorted((m.step, m.value) for m in client.get_metric_history(trial.info.run_id, key))
        assert history == [(epoch, scale / (epoch + 1)) for epoch in range(1500)]
    assert trial.info.status == "FINISHED" and trial.data.metrics["epochs"] == 1500


def test_system_metrics_are_recorded_on_the_study_run_when_asked(workdir, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # MLflow's own knob: samples every second
    raw = tiny_study(name="system", search__cv=None, search__n_trials=2, tracking__system_metrics=True,
                     tracking__report=False, training__epochs=30, training__early_stopping=False)
    result = run_study(parse_study(raw), "")
    run = MlflowClient(local_store()).get_run(result.study_run_id)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)
    quiet = run_study(parse_study(raw | {"name": "quiet", "tracking": {"report": False}}), "")
    assert not any(k.startswith("system/") for k in MlflowClient(local_store()).get_run(
        quiet.study_run_id).data.metrics)
