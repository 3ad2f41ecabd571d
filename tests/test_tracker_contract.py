"""The tracker contract, run over every tracker: the null tracker, MLflow on an embedded SQLite store and MLflow
on a real ``mlflow server``. What each recorded is read back the way a user would (MLflow's client) where there
is a record. A new tracker is tested by adding one entry to TRACKERS.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LinearRegression

from hpsearch.results import DataSplits, StudyResult, TrialResult
from hpsearch.tracking.base import NullTracker
from hpsearch.tracking.mlflow_tracker import MlflowTracker

TRACKERS = ["null", "sqlite", "server"]


@pytest.fixture(params=TRACKERS)
def make_tracker(request, tmp_path, monkeypatch):
    """A function making a fresh tracker on the same store each call (a re-run, another worker)."""
    monkeypatch.chdir(tmp_path)
    if request.param == "null":
        return NullTracker
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if request.param == "sqlite" else \
        request.getfixturevalue("mlflow_server")
    experiment = f"contract-{request.node.name}"
    return lambda: MlflowTracker(uri, experiment)


def _runs(tracker) -> dict:
    """{'study': status, number: (status, hpsearch.state, hpsearch.reason)} of the tracker's experiment."""
    if tracker.tracking_uri is None:
        return {}
    client = MlflowClient(tracker.tracking_uri)
    found = {}
    for run in client.search_runs([tracker.experiment_id]):
        tags = run.data.tags
        if tags.get("hpsearch.role") == "study":
            found["study"] = run.info.status
        elif tags.get("hpsearch.role") == "trial":
            found[int(tags["hpsearch.trial"])] = (run.info.status, tags.get("hpsearch.state"),
                                                  tags.get("hpsearch.reason"))
    return found


def _fitted() -> LinearRegression:
    return LinearRegression().fit(np.arange(8.0).reshape(4, 2), np.arange(4.0))


def test_a_study_records_every_trial_and_its_end(make_tracker):
    tracker = make_tracker()
    tracker.check_reachable()
    study_run = tracker.start_study("contract", {"strategy": "random"}, "name: contract\n", resume=False)
    finished = TrialResult(number=0, params={"n_neurons": 3}, fold_scores=[-0.5], fold_epochs=[2])
    failed = TrialResult(number=1, params={"n_neurons": 4}, state="failed", reason="ValueError: bad candidate")
    run = tracker.start_trial(0, finished.params)
    run.log_metrics({"loss": 1.0, "val_loss": 1.5}, step=0)
    model = _fitted()
    tracker.end_trial(run, finished, model=model)
    tracker.end_trial(tracker.start_trial(1, failed.params), failed)
    tracker.end_study(StudyResult("contract", [finished, failed], "neg_mean_squared_error"), {})

    recorded = _runs(tracker)
    if tracker.tracking_uri is None:  # the null tracker records nothing and hands out no ids
        assert (study_run, finished.run_id, recorded) == (None, None, {})
        return
    assert recorded == {"study": "FINISHED", 0: ("FINISHED", "finished", None),
                        1: ("FAILED", "failed", "ValueError: bad candidate")}
    loaded = tracker.trial_model(finished.run_id)  # a trial's model comes back, fitted
    assert np.allclose(loaded.predict([[1.0, 2.0]]), model.predict([[1.0, 2.0]]))


def test_an_aborted_study_leaves_nothing_running(make_tracker):
    tracker = make_tracker()
    tracker.start_study("contract", {}, "", resume=False)
    tracker.start_trial(0, {"n_neurons": 3})
    tracker.abort("interrupted (Ctrl-C)")
    recorded = _runs(tracker)
    assert all(status == "KILLED" for status in [recorded.get("study", "KILLED")] +
               [v[0] for k, v in recorded.items() if k != "study"])


def test_a_resumed_study_records_into_the_same_study_run(make_tracker):
    first = make_tracker()
    study_run = first.start_study("contract", {}, "", resume=False)
    first.end_study(StudyResult("contract", [], "neg_mean_squared_error"), {})
    again = make_tracker()
    assert again.start_study("contract", {}, "", resume=True, run_id=study_run) == study_run


def test_trials_a_killed_worker_left_are_closed_once_whether_or_not_they_reached_the_tracker(make_tracker):
    worker = make_tracker()
    study_run = worker.start_study("contract", {}, "", resume=False)
    worker.start_trial(3, {"n_neurons": 3})
    worker.wait()  # trial 3 reached the tracker; trial 4 never did (its worker died first)
    resumed = make_tracker()
    resumed.start_study("contract", {}, "", resume=True, run_id=study_run)
    resumed.close_killed_trials([3, 4])
    resumed.close_killed_trials([3, 4])  # a second resume changes nothing
    recorded = _runs(resumed)
    if resumed.tracking_uri is None:
        assert recorded == {}
        return
    killed = ("KILLED", "failed", "killed: its worker stopped sending heartbeats")
    assert {k: v for k, v in recorded.items() if k != "study"} == {3: killed, 4: killed}


def test_the_studys_data_is_recorded_on_the_study_run_and_what_each_trial_used_on_its_run(make_tracker):
    tracker = make_tracker()
    tracker.start_study("contract", {"strategy": "random"}, "name: contract\n", resume=False)
    X, y = np.arange(40.0).reshape(20, 2), np.arange(20.0)
    splits = {"training": (X[:12], y[:12]), "validation": (X[12:16], y[12:16]), "test": (X[16:], y[16:])}
    tracker.log_datasets(DataSplits("toy", "/data/toy.csv", splits, ("rooms", "age"), ("price",)))
    trial = TrialResult(number=0, params={"n_neurons": 3}, fold_scores=[-0.5], fold_epochs=[2],
                        fold_metrics=[{"val_mse": 0.5, "val_r2": 0.1}])
    tracker.end_trial(tracker.start_trial(0, trial.params), trial)
    tracker.end_study(StudyResult("contract", [trial], "neg_mean_squared_error"), {})
    if tracker.tracking_uri is None:
        return
    client = MlflowClient(tracker.tracking_uri)
    runs = {r.data.tags["hpsearch.role"]: r for r in client.search_runs([tracker.experiment_id])}
    study = {d.tags[0].value: d.dataset for d in runs["study"].inputs.dataset_inputs}
    assert {context: d.name for context, d in study.items()} == {
        "training": "toy-training", "validation": "toy-validation", "test": "toy-test"}
    assert json.loads(study["test"].profile)["num_rows"] == 4 and "/data/toy.csv" in study["test"].source
    assert [c["name"] for c in json.loads(study["training"].schema)["mlflow_colspec"]] == ["rooms", "age", "price"]
    trial_run = runs["trial"]
    assert sorted(d.tags[0].value for d in trial_run.inputs.dataset_inputs) == ["training", "validation"]
    assert trial_run.info.run_name == "trial-000 n_neurons=3"
    assert trial_run.data.metrics["val_mse"] == 0.5 and trial_run.data.metrics["val_r2"] == 0.1
    assert "| 0 | -0.5 | 2 | n_neurons=3 |" in runs["study"].data.tags["mlflow.note.content"]
