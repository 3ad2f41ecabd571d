"""Tracking faults, with real MLflow servers: unreachable at start, offline recording + sync, a restart mid-study."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import free_port, local_store, serving_mlflow, tiny_study, wait_for_http, write_study
from mlflow import MlflowClient

from hpsearch.cli.main import main
from hpsearch.config.loading import load_study
from hpsearch.data.loading import load_dataset

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_unreachable_server_is_a_clear_error_before_training(workdir, capsys):
    port = free_port()  # nothing listens there
    path = write_study(workdir, tiny_study(name="unreachable", tracking__uri=f"http://user:secret@127.0.0.1:{port}"))
    started = time.monotonic()
    assert main(["run", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: the MLflow tracking server at http://user:***@127.0.0.1:")
    assert "does not answer" in err and "--offline" in err and "secret" not in err
    assert time.monotonic() - started < 30  # refused at once, no training
    assert sorted(os.listdir(workdir)) == ["study.yaml"]


def _runs(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], max_results=1000) if found else []


def _curves(client: MlflowClient, run) -> dict[str, list[tuple[int, int, float]]]:
    return {key: [(m.step, m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, key)]
            for key in run.data.metrics}


def test_offline_run_then_sync_copies_the_study_once(mlflow_server, workdir, capsys):
    path = write_study(workdir, tiny_study(name="offline-sync", tracking__uri=mlflow_server))
    assert main(["run", str(path), "--offline"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"nothing sent to {mlflow_server}" in out and "hpsearch sync" in out
    server = MlflowClient(mlflow_server)
    assert server.get_experiment_by_name("offline-sync") is None  # the server was not contacted
    assert not (workdir / "mlflow.db").exists()

    assert main(["sync", str(path)]) == 0
    assert "3 run(s) copied, 0 already there, 1 model version(s)" in " ".join(capsys.readouterr().out.split())
    local = MlflowClient(local_store("mlflow-offline.db"))
    source = {r.info.run_id: r for r in _runs(local, "offline-sync")}
    copies = {r.data.tags["hpsearch.synced_from"]: r for r in _runs(server, "offline-sync")}
    assert set(copies) == set(source) and len(source) == 3  # the study run and two trials
    ids = {old: copy.info.run_id for old, copy in copies.items()}
    for old, run in source.items():
        copy = copies[old]
        assert (copy.info.run_name, copy.info.status, copy.info.start_time, copy.info.end_time) == (
            run.info.run_name, run.info.status, run.info.start_time, run.info.end_time)
        assert copy.data.params == run.data.params
        assert _curves(server, copy) == _curves(local, run)  # every step, timestamp and value
        parent = run.data.tags.get("mlflow.parentRunId")
        assert copy.data.tags.get("mlflow.parentRunId") == (ids[parent] if parent else None)
        assert {a.path for a in server.list_artifacts(copy.info.run_id)} == {
            a.path for a in local.list_artifacts(old)}
    study = next(c for c in copies.values() if c.data.tags["hpsearch.role"] == "study")
    trials = [c for c in copies.values() if c.data.tags["hpsearch.role"] == "trial"]
    for trial in trials:  # the longest fold's curve has as many steps as the trial's epochs
        steps = [len(server.get_metric_history(trial.info.run_id, f"fold{k}/loss")) for k in (0, 1)]
        assert max(steps) == trial.data.metrics["epochs"]
    assert study.data.tags["hpsearch.best_run_id"] in {c.info.run_id for c in trials}
    assert {"study.yaml", "model", "report"} <= {a.path for a in server.list_artifacts(study.info.run_id)}

    champion = server.get_model_version_by_alias("offline-sync-best", "champion")
    assert champion.run_id == study.info.run_id
    data = load_dataset(load_study(path).data, 0)
    mlflow.set_tracking_uri(mlflow_server)
    synced = mlflow.sklearn.load_model("models:/offline-sync-best@champion")
    mlflow.set_tracking_uri(local_store("mlflow-offline.db"))
    recorded = mlflow.sklearn.load_model(f"runs:/{study.data.tags['hpsearch.synced_from']}/model")
    np.testing.assert_array_equal(synced.predict(data.X_test), recorded.predict(data.X_test))

    assert main(["sync", str(path)]) == 0  # again: nothing new
    assert "0 run(s) copied, 3 already there, 0 model version(s)" in " ".join(capsys.readouterr().out.split())
    assert len(_runs(server, "offline-sync")) == 3
    assert len(server.search_model_versions("name = 'offline-sync-best'")) == 1


def _start_server(root: Path, port: int) -> subprocess.Popen:
    """``mlflow server`` in its own process group (so that killing it kills its web workers too)."""
    with open(root / "server.log", "a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination",
             str(root / "artifacts"), "--serve-artifacts", "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no job runner: less load


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def _study_with_server_killed(tmp_path: Path, name: str, n_trials: int, env: dict[str, str]) -> tuple:
    """Start a server and ``hpsearch run`` against it in a subprocess; kill the server once the first trial
    run appears. Returns (server root, port, the study process); the caller restarts the server or not."""
    root = tmp_path / "server"
    root.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start_server(root, port)
    try:
        wait_for_http(url + "/health", server)
        raw = tiny_study(name=name, search__n_trials=n_trials, training__epochs=5, training__early_stopping=False)
        write_study(tmp_path, raw)
        env = {**os.environ, "MLFLOW_TRACKING_URI": url, **env,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        with open(tmp_path / "out.log", "w") as out, open(tmp_path / "err.log", "w") as err:
            process = subprocess.Popen([sys.executable, "-m", "hpsearch", "run", "study.yaml"], cwd=tmp_path,
                                       env=env, stdout=out, stderr=err)
        client = MlflowClient(url)
        deadline = time.monotonic() + 120
        while not [r for r in _runs(client, name) if r.data.tags.get("hpsearch.role") == "trial"]:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail((tmp_path / "err.log").read_text())
            time.sleep(0.5)
    finally:
        _kill(server)  # mid-study: the first trial is being recorded
    assert process.poll() is None
    return root, port, process


def test_server_restarted_mid_study_loses_nothing(tmp_path):
    root, port, study_process = _study_with_server_killed(tmp_path, "restart", 4,
                                                          {"HPSEARCH_TRACKING_RETRY_SECONDS": "60"})
    url = f"http://127.0.0.1:{port}"
    server = None
    try:
        time.sleep(1)
        server = _start_server(root, port)
        wait_for_http(url + "/health", server)
        study_process.wait(timeout=240)
        err = (tmp_path / "err.log").read_text()
        assert study_process.returncode == 0, err
        assert "does not answer" in err and "answers again" in err  # the outage was met, and ridden out

        client = MlflowClient(url)
        runs = _runs(client, "restart")
        studies = [r for r in runs if r.data.tags.get("hpsearch.role") == "study"]
        assert len(studies) == 1 and studies[0].info.status == "FINISHED"
        assert "best_score" in studies[0].data.metrics and "test_score" in studies[0].data.metrics
        trials = [r for r in runs if r.data.tags.get("hpsearch.role") == "trial"]
        assert sorted(int(t.data.tags["hpsearch.trial"]) for t in trials) == list(range(4))  # each exactly once
        for trial in trials:
            assert trial.info.status == "FINISHED" and trial.data.tags["hpsearch.state"] == "finished"
            epochs = int(trial.data.metrics["epochs"])
            assert epochs == 5
            for fold in (0, 1):
                for metric in ("loss", "val_loss"):
                    steps = [m.step for m in client.get_metric_history(trial.info.run_id, f"fold{fold}/{metric}")]
                    assert steps == list(range(epochs)), (trial.info.run_name, fold, metric, steps)
            assert "model" in {a.path for a in client.list_artifacts(trial.info.run_id)}
    finally:
        if study_process.poll() is None:
            study_process.kill()
            study_process.wait()
        if server is not None:
            _kill(server)


def test_server_gone_for_good_the_study_still_finishes(tmp_path):
    # short budgets, and no per-request retries under them: the outage costs seconds, not minutes
    _, _, study_process = _study_with_server_killed(tmp_path, "gone", 2, {
        "HPSEARCH_TRACKING_RETRY_SECONDS": "3", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    try:
        study_process.wait(timeout=240)
    finally:
        if study_process.poll() is None:
            study_process.kill()
            study_process.wait()
    err = " ".join((tmp_path / "err.log").read_text().split())
    out = " ".join((tmp_path / "out.log").read_text().split())
    assert study_process.returncode == 0, err
    assert "stopped answering; not recorded there: trial" in err and "the study run's results" in err
    assert "trials: 2 finished" in out and "test score of the refit best model" in out
    saved = list((tmp_path / "hpsearch-unsent").glob("gone-*/model"))
    assert len(saved) == 1 and str(saved[0]) in err
    model = mlflow.sklearn.load_model(str(saved[0]))
    data = load_dataset(load_study(tmp_path / "study.yaml").data, 0)
    assert model.predict(data.X_test).shape == (len(data.X_test),)


def test_a_server_without_datasets_or_tables_records_the_rest_and_says_so_once(mlflow_server, workdir, monkeypatch,
                                                                              caplog):
    """An older MLflow server answers the dataset and table calls with "no such endpoint" (one cannot run here:
    its refusal is what the client raises for it); the study still runs and says once what it could not record."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ENDPOINT_NOT_FOUND

    def refused(self, *args, **kwargs):
        raise MlflowException("API endpoint not found", error_code=ENDPOINT_NOT_FOUND)

    monkeypatch.setattr(MlflowClient, "log_inputs", refused)
    monkeypatch.setattr(MlflowClient, "log_table", refused)
    path = write_study(workdir, tiny_study(name="older-server", tracking__uri=mlflow_server, search__n_trials=3,
                                           tracking__report=False))
    assert main(["run", str(path)]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("did not take the study's datasets" in w for w in warnings) == 1, warnings
    assert sum("the table trials.json was not recorded" in w for w in warnings) == 1, warnings
    runs = _runs(MlflowClient(mlflow_server), "older-server")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}


@pytest.fixture
def full_artifact_disk(workdir: Path):
    """./mlartifacts (where the embedded store keeps artifacts) on a 256 KiB tmpfs filled but for 16 KiB: the study
    file fits, the models do not."""
    folder = workdir / "mlartifacts"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True,
                             text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    filler = folder / "earlier-artifact.bin"
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"x" * 4096)
        except OSError:
            pass
    os.truncate(filler, filler.stat().st_size - 16 * 1024)
    try:
        yield filler
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_artifact_disk_leaves_the_models_unsaved_and_the_record_intact(full_artifact_disk, workdir, capsys,
                                                                                caplog):
    before = full_artifact_disk.read_bytes()
    path = write_study(workdir, tiny_study(name="full-disk", search__n_trials=2, search__cv=None))
    code = main(["run", str(path)])
    captured = capsys.readouterr()
    output = captured.out + captured.err + caplog.text
    assert code == 0, output
    assert "Traceback" not in output
    assert "was not saved: No space left on device" in caplog.text
    assert "the delivered model was not saved in MLflow (No space left on device)" in " ".join(captured.err.split())
    client = MlflowClient(local_store())
    runs = _runs(client, "full-disk")
    (study,) = [r for r in runs if r.data.tags.get("hpsearch.role") == "study"]
    trials = [r for r in runs if r.data.tags.get("hpsearch.role") == "trial"]
    assert study.info.status == "FINISHED" and "test_score" in study.data.metrics
    assert len(trials) == 2 and all(t.info.status == "FINISHED" for t in trials)  # the record is whole
    assert {r.data.tags.get("hpsearch.model") for r in (study, *trials)} == {"not saved: No space left on device"}
    assert not client.search_registered_models(f"name='{'full-disk-best'}'")  # no champion without a model
    assert full_artifact_disk.read_bytes() == before  # what was stored before is untouched


def test_an_artifact_disk_full_from_the_start_stops_the_study_before_training(full_artifact_disk, workdir, capsys):
    with open(full_artifact_disk, "ab", buffering=0) as out:  # the last 16 KiB too
        try:
            while True:
                out.write(b"x" * 1024)
        except OSError:
            pass
    path = write_study(workdir, tiny_study(name="full-at-start", search__n_trials=2, search__cv=None))
    assert main(["run", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: cannot store the study's files in MLflow (No space left on device: "), err
    (study,) = _runs(MlflowClient(local_store()), "full-at-start")
    assert study.info.status == "FAILED"  # closed, not left RUNNING


ADMIN_PASSWORD = "s3cret-Pa55word"


@pytest.fixture
def auth_server(tmp_path: Path):
    """``mlflow server --app-name basic-auth``: MLflow's own basic auth, an admin account, SQLite stores."""
    config = tmp_path / "basic_auth.ini"
    config.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{tmp_path / 'auth.db'}\n"
                      f"admin_username = admin\nadmin_password = {ADMIN_PASSWORD}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
                      encoding="utf-8")
    with serving_mlflow(tmp_path, "--app-name", "basic-auth", env={
            "MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-key"}) as url:
        yield url


def test_mlflow_basic_auth_records_with_the_right_password_and_stops_before_training_with_a_wrong_one(
        auth_server, workdir, monkeypatch, capsys):
    path = write_study(workdir, tiny_study(name="with-auth", search__n_trials=2, search__cv=None,
                                           tracking__uri=auth_server))
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    assert main(["run", str(path)]) == 0, capsys.readouterr()
    capsys.readouterr()
    runs = _runs(MlflowClient(auth_server), "with-auth")
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-" + ADMIN_PASSWORD)
    started = time.monotonic()
    assert main(["run", str(path), "--set", "name=with-wrong-auth"]) == 2
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert err.startswith(f"error: the MLflow tracking server at {auth_server} refused the credentials of user "
                          "'admin' (HTTP 401)"), err
    assert ADMIN_PASSWORD not in captured.out + captured.err
    assert time.monotonic() - started < 30  # refused before any training
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    assert MlflowClient(auth_server).get_experiment_by_name("with-wrong-auth") is None  # nothing written
