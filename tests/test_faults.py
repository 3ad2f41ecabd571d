"""Faults (issue #7, parts 2 and 3): odd data is refused before training with a message naming the file and
the problem; diverging, raising, oversized and interrupted trials end cleanly, the study goes on where it
can, and the summary counts failures by reason. Training cases are tiny (a few epochs on small data).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import local_store, tiny_study, write_study
from mlflow import MlflowClient
from test_cli_errors import WRITES, run_cli, run_in_process

from hpsearch import load_best
from hpsearch.results import StudyResult, TrialResult

# --- data faults: refused before training, nothing written -----------------------------------------


def frame(n: int = 40, **columns) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), **columns})


def csv(data: pd.DataFrame | str):
    def write(folder: Path) -> str:
        path = folder / "data.csv"
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            data.to_csv(path, index=False)
        return "data.csv"
    return write


def npz(**arrays):
    def write(folder: Path) -> str:
        np.savez(folder / "data.npz", **arrays)
        return "data.npz"
    return write


RNG = np.random.default_rng(1)
DATA_FAULTS = [
    pytest.param(csv(frame(a=[np.nan, 1.0] * 20, y=np.arange(40.0))), {}, ["'a': 20 rows", "NaN or infinity"],
                 id="nan-in-a-feature"),
    pytest.param(npz(X=np.where(np.eye(40, 3) == 1, np.inf, 0.5), y=np.arange(40.0)), {}, ["NaN or infinity"],
                 id="inf-in-features"),
    pytest.param(csv(frame(y=[np.nan, 1.5, 2.5, 3.5] * 10)), {}, ["target values", "missing", "'y': 10"],
                 id="nan-in-the-target"),
    pytest.param(csv(frame(y=[np.inf, 1.5, 2.5, 3.5] * 10)), {}, ["target values", "NaN or infinity"],
                 id="inf-in-the-target"),
    pytest.param(csv(frame(y=[2.5] * 40)), {}, ["target y", "is constant", "nothing to learn"], id="constant-target"),
    pytest.param(csv(frame(kind=["spam"] * 40)), {}, ["has a single class", "'spam'"], id="single-class"),
    pytest.param(csv(frame(city=["Paris", "Rome"] * 20, y=np.arange(40.0))), {},
                 ["feature columns city", "not numeric"], id="string-column"),
    pytest.param(npz(X=RNG.normal(size=(40, 3)), y=RNG.normal(size=35)), {}, ["shape (40, 3)", "(35,)"],
                 id="mismatched-row-counts"),
    pytest.param(csv(""), {}, ["is empty"], id="empty-file"),
    pytest.param(csv("a,b,y\n"), {}, ["has no data rows"], id="header-only"),
    pytest.param(csv(frame(y=np.arange(40.0))), {"target": "price"}, ["data.target", "'price' not found"],
                 id="target-column-missing"),
    pytest.param(csv(frame(n=2000, label=[f"class-{i}" for i in range(1000)] * 2)), {},
                 ["cannot split", "data.test_size", "rare classes"], id="huge-categorical-target"),
]


@pytest.mark.parametrize(("write", "data", "expected"), DATA_FAULTS)
def test_data_faults_are_refused_before_training(tmp_path, write, data, expected):
    name = write(tmp_path)
    write_study(tmp_path, tiny_study(data={"path": name, "test_size": 0.25, "valid_size": 0.25, **data}))
    before = set(os.listdir(tmp_path))
    result = run_in_process(tmp_path, "run", "study.yaml")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert message.startswith("error: ") and name in message, message
    for text in expected:
        assert text in message, f"{text!r} not in {message}"
    assert not [w for w in WRITES if (tmp_path / w).exists()] and set(os.listdir(tmp_path)) == before


# --- models too big to allocate: refused by parameter count -----------------------------------------


@pytest.mark.parametrize(("overrides", "layers"), [
    ({"model__params": {"optimizer": "adam", "n_neurons": 10**6, "n_hidden": 50}, "search__space": {}}, "50 x 1000000"),
    ({"search__space": {"n_neurons": {"int": [10, 10**6]}, "n_hidden": {"int": [1, 50]}}}, "50 x 1000000"),
    ({"search__space": {"n_neurons": [[100, 100], [10**5, 10**5, 10**5]]}}, "[100000, 100000, 100000]"),
], ids=["fixed", "searched-range", "per-layer-widths"])
def test_an_absurd_model_is_refused_before_anything_is_allocated(tmp_path, overrides, layers):
    write_study(tmp_path, tiny_study(**overrides))
    result = run_in_process(tmp_path, "run", "study.yaml")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert f"hidden layers {layers}" in message and "above model.max_params=1e+08" in message, message
    assert not [w for w in WRITES if (tmp_path / w).exists()]


def test_the_parameter_limit_is_a_study_field(tmp_path):
    write_study(tmp_path, tiny_study(search__space={"n_neurons": {"int": [10, 20_000]}, "n_hidden": {"int": [1, 2]}}))
    assert run_in_process(tmp_path, "check", "study.yaml").returncode == 2  # 4e8 weights > 1e8
    raised = run_in_process(tmp_path, "check", "study.yaml", "--set", "model.max_params=1000000000")
    assert raised.returncode == 0, raised.stderr


# --- training faults: the trial fails with its reason, the study goes on -------------------------------

FAULTY_MODELS = """
    import os
    import signal
    import sqlite3
    import time
    from pathlib import Path

    from hpsearch.models.mlp import build_mlp


    def build_model(meta, mode="ok", learning_rate=1e-2):
        marker = Path("interrupt-at-build")  # holds how many builds to let through before Ctrl-C
        if marker.exists():
            left = int(marker.read_text()) - 1
            marker.write_text(str(left))
            if left == 0:
                marker.unlink()
                os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C while this trial starts
                time.sleep(30)
        hang = Path("hang-at-build")  # how many builds to let through before one waits (to be sent SIGTERM)
        if hang.exists():
            left = int(hang.read_text()) - 1
            hang.write_text(str(left))
            if left <= 0:
                hang.unlink(missing_ok=True)
                Path(f"hanging-{os.getpid()}").touch()
                time.sleep(120)
        refits = Path("diverging-refits")  # how many more refits (the fits on all the training rows) diverge
        if meta["X_shape_"][0] > 250 and refits.exists() and int(refits.read_text()) > 0:
            refits.write_text(str(int(refits.read_text()) - 1))
            mode = "nan"
        if mode == "raise":
            raise RuntimeError("boom: this architecture cannot be built")
        if mode == "break-storage":  # the study's storage loses a table while this trial trains
            with sqlite3.connect("optuna.db") as db:
                db.execute("drop table hpsearch_folds")
        if mode == "nan":
            return build_mlp(meta, n_neurons=8, optimizer="sgd", learning_rate=1e6)
        return build_mlp(meta, n_neurons=8, optimizer="adam", learning_rate=learning_rate)
"""


@pytest.fixture
def faulty(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's factory module in the working folder: ``mode`` picks the fault."""
    (workdir / "faulty_models.py").write_text(textwrap.dedent(FAULTY_MODELS), encoding="utf-8")
    monkeypatch.syspath_prepend(str(workdir))
    sys.modules.pop("faulty_models", None)
    return workdir


def trial_runs(experiment: str) -> tuple:
    client = MlflowClient(local_store())
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=100)
    study = [r for r in runs if r.data.tags.get("hpsearch.role") == "study"]
    trials = sorted((r for r in runs if r.data.tags.get("hpsearch.trial") is not None),
                    key=lambda r: int(r.data.tags["hpsearch.trial"]))
    return study, trials


def test_nan_loss_and_a_raising_factory_fail_their_trials_and_the_summary_counts_them(faulty):
    write_study(faulty, tiny_study(
        name="faults", data={"dataset": "diabetes", "test_size": 0.2, "valid_size": 0.2},
        model={"factory": "faulty_models:build_model"}, training={"epochs": 5, "early_stopping": False},
        tracking={"log_models": False},
        search={"strategy": "grid", "cv": None, "space": {"mode": ["ok", "nan", "raise"]}}))
    result = run_in_process(faulty, "run", "study.yaml")
    assert result.returncode == 0, result.stderr  # one trial finished: the study went on and refit it
    summary = " ".join(result.stdout.split())
    assert "trials: 1 finished, 0 pruned, 2 failed" in summary
    assert "failed x1: TrialFailed: the loss became NaN/inf at epoch" in summary
    assert "failed x1: RuntimeError: boom: this architecture cannot be built" in summary
    assert "test score of the ensemble of trials" in summary  # holdout: the trials' own models are delivered
    (study,), trials = trial_runs("faults")
    states = {t.data.params["mode"]: t for t in trials}
    assert states["ok"].info.status == "FINISHED"
    assert states["nan"].info.status == "FAILED" and "NaN" in states["nan"].data.tags["hpsearch.reason"]
    curve = MlflowClient(local_store()).get_metric_history(states["nan"].info.run_id, "loss")
    assert len(curve) < 5  # TerminateOnNaN stopped it at once, not after the 5 epochs
    assert states["raise"].info.status == "FAILED" and "boom" in states["raise"].data.tags["hpsearch.reason"]
    assert study.info.status == "FINISHED" and study.data.metrics["trials_failed"] == 2


def test_a_storage_failing_while_a_trial_is_recorded_stops_the_study_and_fails_no_trial(faulty):
    write_study(faulty, tiny_study(
        name="storage-fault", model={"factory": "faulty_models:build_model"}, tracking={"log_models": False},
        training={"epochs": 2, "early_stopping": False},
        search={"strategy": "grid", "cv": None, "space": {"mode": ["ok", "break-storage"]}}))
    result = run_in_process(faulty, "run", "study.yaml")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "cannot record fold 0 of trial 1 in search.storage sqlite:///" in message and "hpsearch_folds" in message
    _, trials = trial_runs("storage-fault")
    reasons = [t.data.tags["hpsearch.reason"] for t in trials if "hpsearch.reason" in t.data.tags]
    assert reasons and all("search.storage" in r for r in reasons)  # the interrupted run names the storage


def refit_study(folder: Path, name: str) -> None:
    """One candidate, cv=2: its trial fits ~180 rows a fold, the refit all ~360 training rows."""
    write_study(folder, tiny_study(
        name=name, model={"factory": "faulty_models:build_model"}, training={"epochs": 3, "early_stopping": False},
        tracking={"log_models": False, "report": False},
        search={"strategy": "grid", "cv": 2, "space": {"mode": ["ok"]}}))


def test_a_refit_that_diverges_is_tried_again_with_the_next_seed(faulty, caplog):
    refit_study(faulty, "refit-retried")
    (faulty / "diverging-refits").write_text("1")
    result = run_in_process(faulty, "run", "study.yaml")
    assert result.returncode == 0, result.stderr
    assert "refitting the best params failed" in caplog.text and "trying again with seed + 1" in caplog.text
    (study,), (trial,) = trial_runs("refit-retried")
    assert trial.info.status == "FINISHED" and study.info.status == "FINISHED"
    assert study.data.tags["hpsearch.refit_seed"] == "seed + 1"
    model = load_best("refit-retried")  # the working folder's embedded store
    assert np.isfinite(model.predict(np.zeros((3, 30)))).all()


def test_a_refit_that_keeps_diverging_fails_the_study_in_one_paragraph(faulty):
    refit_study(faulty, "refit-diverges")
    (faulty / "diverging-refits").write_text("3")
    result = run_in_process(faulty, "run", "study.yaml")
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert "refitting the best trial's params {'mode': 'ok'} on the training data failed with 3 seeds" in message
    assert "NaN" in message and "every trial is recorded" in message
    (study,), (trial,) = trial_runs("refit-diverges")
    assert trial.info.status == "FINISHED"
    assert study.info.status == "FAILED" and "RefitFailed" in study.data.tags["hpsearch.reason"]


def test_ctrl_c_ends_the_trial_closes_every_run_and_says_how_to_resume(faulty):
    write_study(faulty, tiny_study(
        name="interrupted", model={"factory": "faulty_models:build_model"},
        training={"epochs": 2, "early_stopping": False}, tracking={"log_models": False},
        search={"strategy": "optuna", "n_trials": 3, "cv": None, "sampler": "random", "pruner": "none",
                "storage": "sqlite:///optuna.db", "space": {"learning_rate": {"float": [1e-3, 1e-2], "log": True}}}))
    (faulty / "interrupt-at-build").write_text("2")  # trial 0 trains, trial 1 is interrupted
    # Python's own Ctrl-C handler, as in a fresh `hpsearch run` (a library loaded by an earlier test may replace it)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = run_in_process(faulty, "run", "study.yaml")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.returncode == 130, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert "interrupted" in message and "run the same command again" in message
    (study,), trials = trial_runs("interrupted")
    assert [t.info.status for t in trials] == ["FINISHED", "KILLED"]
    assert trials[1].data.tags["hpsearch.state"] == "failed"
    assert trials[1].data.tags["hpsearch.reason"] == "interrupted (Ctrl-C)"
    assert study.info.status == "KILLED"

    resumed = run_in_process(faulty, "run", "study.yaml")  # the same command again
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    import optuna

    storage = optuna.load_study(study_name="interrupted", storage="sqlite:///optuna.db")
    assert storage.trials[0].state == optuna.trial.TrialState.COMPLETE  # the finished trial was kept
    assert storage.trials[0].params == {"learning_rate": pytest.approx(float(trials[0].data.params["learning_rate"]))}
    assert not [r for r in MlflowClient(local_store()).search_runs(
        [study.info.experiment_id]) if r.info.status == "RUNNING"]


def sigterm_study(folder: Path, name: str) -> None:
    write_study(folder, tiny_study(
        name=name, model={"factory": "faulty_models:build_model"},
        training={"epochs": 2, "early_stopping": False}, tracking={"log_models": False},
        search={"strategy": "optuna", "n_trials": 3, "cv": None, "sampler": "random", "pruner": "none",
                "storage": "sqlite:///optuna.db", "space": {"learning_rate": {"float": [1e-3, 1e-2], "log": True}}}))


def terminate_when_hanging(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """``hpsearch *args`` in ``folder``, sent a real SIGTERM once a trial hangs in its build."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen([sys.executable, "-m", "hpsearch", *args], cwd=folder, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list(folder.glob("hanging-*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGTERM)  # what `docker compose stop` and process managers send
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def test_sigterm_ends_the_trial_as_terminated_closes_every_run_and_a_rerun_resumes(faulty):
    sigterm_study(faulty, "terminated")
    (faulty / "hang-at-build").write_text("2")  # trial 0 trains, trial 1 is terminated
    result = terminate_when_hanging(faulty, "run", "study.yaml")
    assert result.returncode == 143, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "terminated (SIGTERM): open MLflow runs were closed as KILLED" in " ".join(result.stderr.split())
    (study,), trials = trial_runs("terminated")
    assert [t.info.status for t in trials] == ["FINISHED", "KILLED"]
    assert trials[1].data.tags["hpsearch.reason"] == "terminated (SIGTERM)"
    assert study.info.status == "KILLED"

    resumed = run_in_process(faulty, "run", "study.yaml")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    import optuna

    stored = optuna.load_study(study_name="terminated", storage="sqlite:///optuna.db").trials
    assert stored[0].state == optuna.trial.TrialState.COMPLETE  # the finished trial was kept
    assert stored[1].state == optuna.trial.TrialState.FAIL and stored[1].user_attrs["hpsearch_interrupted"]
    assert [t.state for t in stored].count(optuna.trial.TrialState.COMPLETE) == 3  # the terminated one is redone
    assert not [r for r in MlflowClient(local_store()).search_runs([study.info.experiment_id])
                if r.info.status == "RUNNING"]


def test_sigterm_to_a_run_with_workers_reaches_every_worker(faulty):
    sigterm_study(faulty, "terminated-workers")
    (faulty / "hang-at-build").write_text("1")  # every worker's first trial waits
    result = terminate_when_hanging(faulty, "run", "study.yaml", "--workers", "2")
    assert result.returncode == 143, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    client = MlflowClient(local_store())
    experiment = client.get_experiment_by_name("terminated-workers").experiment_id
    runs = client.search_runs([experiment])
    assert runs and not [r for r in runs if r.info.status == "RUNNING"]  # every worker closed its runs
    killed = [r for r in runs if r.data.tags.get("hpsearch.reason") == "terminated (SIGTERM)"]
    assert killed and all(r.info.status == "KILLED" for r in killed)

    resumed = run_in_process(faulty, "run", "study.yaml")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr


def test_resuming_a_study_whose_mlflow_store_was_deleted_says_what_to_do(workdir):
    write_study(workdir, tiny_study(
        name="store-deleted", training={"epochs": 1}, tracking={"log_models": False, "report": False},
        search={"strategy": "optuna", "n_trials": 1, "cv": None, "sampler": "random", "pruner": "none",
                "storage": "sqlite:///optuna.db"}))
    assert run_in_process(workdir, "run", "study.yaml").returncode == 0
    (workdir / "mlflow.db").unlink()  # the search storage is kept: the study resumes from it
    result = run_cli(workdir, "run", "study.yaml")  # a new process, as a user's next command
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert "the study 'store-deleted' resumes from its search storage, which names MLflow run" in message
    assert "has no such run" in message and "with a new search.storage" in message


def test_failure_reasons_that_differ_only_in_numbers_are_counted_together():
    reasons = ["TrialFailed: the loss became NaN/inf at epoch 3 (learning rate too high?)",
               "TrialFailed: the loss became NaN/inf at epoch 12 (learning rate too high?)",
               "RuntimeError: boom"]
    trials = [TrialResult(i, {}, state="failed", reason=r) for i, r in enumerate(reasons)]
    trials.append(TrialResult(3, {}, fold_scores=[0.5]))
    assert StudyResult("s", trials, "accuracy").failure_counts() == {
        "TrialFailed: the loss became NaN/inf at epoch N (learning rate too high?)": 2, "RuntimeError: boom": 1}


def test_a_study_named_in_any_alphabet_runs_and_is_recorded_under_its_name(workdir):
    name = "études-ü"
    write_study(workdir, tiny_study(name=name, search__strategy="optuna", search__n_trials=2, search__cv=None,
                                    search__storage="sqlite:///optuna.db", training__epochs=2))
    result = run_in_process(workdir, "run", "study.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(local_store())
    assert client.get_experiment_by_name(name) is not None
    assert client.get_model_version_by_alias(f"{name}-best", "champion") is not None
    import optuna

    assert len(optuna.load_study(study_name=name, storage="sqlite:///optuna.db").trials) == 2
