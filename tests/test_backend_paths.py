"""The core end-to-end paths on Keras' JAX and torch backends: each runs ``hpsearch`` in a fresh process with
``training.backend: jax`` or ``torch`` (this test process runs on TensorFlow, and Keras fixes its backend on first
import). torch is not a dependency: its cases skip where it is not installed (``.ci/run`` installs it).

The same paths on TensorFlow are the rest of the suite: pruning, early stopping and per-trial models
(test_run_e2e), resume and ``trials_per_process`` (test_scaleout), workers (test_workers), lr-find
(test_guidance), NaN termination and Ctrl-C (test_faults), offline + sync (test_tracking_faults), Dask (test_scaleout).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from tests.conftest import local_store, tiny_study, write_study

pytestmark = pytest.mark.slow
SPACE = {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [1e-3, 1e-2], "log": True}}
TORCH = pytest.param("torch", marks=pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                                       reason="torch is not installed (pip install torch==2.13.0)"))


@pytest.fixture(params=["jax", TORCH])
def backend(request) -> str:
    """Each case once on JAX and once on torch."""
    return request.param


def backend_study(name: str, backend: str = "jax", **search) -> dict:
    return tiny_study(name=name, search={"strategy": "optuna", "cv": None, "n_trials": 4, "sampler": "random",
                                         "storage": "sqlite:///optuna.db", "space": SPACE, **search},
                      training={"backend": backend, "epochs": 6, "early_stopping": {"patience": 2}},
                      tracking={"report": False})


def hpsearch(cwd, *args: str, expect: int = 0) -> str:
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    done = subprocess.run([sys.executable, "-m", "hpsearch", *args], cwd=cwd, capture_output=True, text=True,
                          env={**env, "HPSEARCH_OFFLINE": "1"}, timeout=600)
    assert done.returncode == expect, done.stdout + done.stderr
    return done.stdout + done.stderr


def runs(experiment: str, uri: str | None = None) -> tuple[list, list]:
    """(study runs, trial runs) of ``experiment``."""
    client = MlflowClient(uri or local_store())
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    return ([r for r in found if r.data.tags.get("hpsearch.role") == "study"],
            [r for r in found if r.data.tags.get("hpsearch.role") == "trial"])


def test_pruning_early_stopping_models_recycling_and_resume(workdir, backend):
    path = write_study(workdir, backend_study(f"{backend}-core", backend, pruner="successive_halving", n_trials=5)
                       | {"execution": {"trials_per_process": 3}})
    out = hpsearch(workdir, "run", str(path))
    assert "the study goes on in a fresh process" in out and f"Keras backend: {backend}" in out
    (study,), trials = runs(f"{backend}-core")
    assert study.data.params["backend"] == backend and len(trials) == 5
    assert {t.data.tags["hpsearch.state"] for t in trials} <= {"finished", "pruned"}
    client = MlflowClient(local_store())
    finished = [t for t in trials if t.data.tags["hpsearch.state"] == "finished"]
    assert finished and all("model" in {a.path for a in client.list_artifacts(t.info.run_id)} for t in finished)
    assert all(t.data.metrics["epochs"] <= 6 for t in trials)

    out = hpsearch(workdir, "run", str(path), "--set", "search.n_trials=7")  # a re-run grows the same study
    (again,), trials = runs(f"{backend}-core")
    assert again.info.run_id == study.info.run_id and len(trials) == 7


def test_two_workers_share_a_study(workdir, backend):
    path = write_study(workdir, backend_study(f"{backend}-workers", backend, n_trials=4, pruner="none"))
    out = hpsearch(workdir, "run", str(path), "--workers", "2")
    assert f"Keras backend: {backend}" in out
    (study,), trials = runs(f"{backend}-workers")
    assert sorted(int(t.data.tags["hpsearch.trial"]) for t in trials) == [0, 1, 2, 3]
    assert len({t.data.tags["hpsearch.process"] for t in trials}) == 2
    assert study.info.status == "FINISHED" and "test_score" in study.data.metrics


def test_lr_find_and_nan_termination(workdir, backend):
    lr_study = backend_study(f"{backend}-lr", backend, space={"n_neurons": 8})
    lr_study["model"]["params"]["optimizer"] = "sgd"
    out = hpsearch(workdir, "lr-find", str(write_study(workdir, lr_study)), "--iterations", "120")
    assert "suggested" in out and "sgd" in out
    client = MlflowClient(local_store())
    (run,) = client.search_runs([client.get_experiment_by_name(f"{backend}-lr").experiment_id])
    assert len(client.get_metric_history(run.info.run_id, "lr")) > 10
    diverging = backend_study(f"{backend}-nan", backend, n_trials=2, pruner="none",  # an SGD step of 1e6 overflows
                              space={"learning_rate": {"float": [1e6, 1e7], "log": True}})
    diverging["model"]["params"]["optimizer"] = "sgd"
    diverging["data"]["dataset"] = "diabetes"
    out = hpsearch(workdir, "run", str(write_study(workdir, diverging, "nan.yaml")), expect=1)
    _, trials = runs(f"{backend}-nan")
    assert [t.data.tags["hpsearch.state"] for t in trials] == ["failed", "failed"]
    assert all("NaN" in t.data.tags["hpsearch.reason"] for t in trials)


def test_offline_then_sync(workdir, backend):
    target = f"sqlite:///{workdir / 'server.db'}"
    path = write_study(workdir, backend_study(f"{backend}-offline", backend, n_trials=2, pruner="none")
                       | {"tracking": {"report": False, "uri": target}})
    out = hpsearch(workdir, "run", str(path), "--offline")
    assert "hpsearch sync" in out and not (workdir / "server.db").exists()
    out = hpsearch(workdir, "sync", str(path))
    assert "3 run(s) copied" in " ".join(out.split())
    (study,), trials = runs(f"{backend}-offline", target)
    assert study.data.params["backend"] == backend and len(trials) == 2
    assert sorted(d.tags[0].value for d in study.inputs.dataset_inputs) == ["test", "training", "validation"]
    assert all(len(t.inputs.dataset_inputs) == 2 for t in trials)  # the datasets travel with the runs


CLUSTER = """
import sys, distributed
if __name__ == "__main__":
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        print(c.scheduler_address, flush=True)
        sys.stdin.read()
"""


@pytest.fixture
def dask_cluster(workdir):
    """A Dask cluster in processes of its own (as a remote one would be), none of them with Keras loaded."""
    distributed = pytest.importorskip("distributed")
    (workdir / "cluster.py").write_text(CLUSTER)
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    process = subprocess.Popen([sys.executable, "cluster.py"], cwd=workdir, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=env)
    address = process.stdout.readline().strip()
    client = distributed.Client(address, timeout=60)
    try:
        yield address, client
    finally:
        client.close()
        process.stdin.close()
        process.wait(timeout=120)


def _dask_study(name: str, address: str) -> dict:
    return backend_study(name) | {"search": {"strategy": "random", "n_trials": 2, "cv": 2, "storage": None,
                                         "space": SPACE}, "execution": {"backend": "dask", "address": address}}


def test_dask_workers_train_on_the_studys_backend(workdir, dask_cluster):
    address, client = dask_cluster
    hpsearch(workdir, "run", str(write_study(workdir, _dask_study("jax-dask", address))))
    assert set(client.run(lambda: __import__("keras").config.backend()).values()) == {"jax"}
    _, trials = runs("jax-dask")
    assert [t.data.tags["hpsearch.state"] for t in trials] == ["finished", "finished"]


def test_dask_workers_already_on_another_backend_fail_the_trials_saying_so(workdir, dask_cluster):
    address, client = dask_cluster
    client.run(lambda: __import__("os").environ.update(KERAS_BACKEND="tensorflow") or __import__("keras"))
    out = hpsearch(workdir, "run", str(write_study(workdir, _dask_study("jax-dask-tf", address))), expect=1)
    assert "KERAS_BACKEND=jax" in " ".join(out.split())
    _, trials = runs("jax-dask-tf")
    assert all("cannot train on the study's Keras backend jax" in t.data.tags["hpsearch.reason"] for t in trials)


def test_ctrl_c_closes_the_runs_and_the_same_command_resumes(workdir, backend):
    path = write_study(workdir, backend_study(f"{backend}-interrupted", backend, n_trials=2, pruner="none")
                       | {"training": {"backend": backend, "epochs": 100_000, "early_stopping": False}})  # Ctrl-C'd
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    process = subprocess.Popen([sys.executable, "-m", "hpsearch", "run", str(path)], cwd=workdir, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**env, "HPSEARCH_OFFLINE": "1"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not _trial_running(workdir, f"{backend}-interrupted"):
        time.sleep(1)
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "run the same command again" in " ".join(err.split())
    (study,), trials = runs(f"{backend}-interrupted")
    assert study.info.status == "KILLED" and "RUNNING" not in {t.info.status for t in trials}
    hpsearch(workdir, "run", str(path), "--set", "training.epochs=2")  # again (shorter: what is checked is the resume)
    (study,), trials = runs(f"{backend}-interrupted")
    assert study.info.status == "FINISHED" and "test_score" in study.data.metrics


def _trial_running(workdir, experiment: str) -> bool:
    """Whether a trial run of ``experiment`` is in the store, read without MLflow: an MlflowClient opening a store
    that the study is still creating would run MLflow's migrations a second time, racing the study's."""
    store = workdir / "mlflow.db"
    if not store.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1)) as db:
            return bool(db.execute(
                "SELECT count(*) FROM runs JOIN experiments USING (experiment_id) JOIN tags USING (run_uuid) "
                "WHERE experiments.name = ? AND tags.key = 'hpsearch.role' AND tags.value = 'trial'",
                (experiment,)).fetchone()[0])
    except sqlite3.Error:  # the store's tables are not all made yet
        return False


TF_FACTORY = '''
import keras
import tensorflow as tf


def build(meta, n_neurons=8, learning_rate=1e-3):
    model = keras.Sequential([keras.Input(meta["n_features_in_"]), keras.layers.Dense(n_neurons, "relu"),
                              keras.layers.Lambda(lambda x: tf.math.square(x)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(learning_rate), "mse")
    return model
'''


def test_a_factory_using_tensorflow_ops_fails_on_jax_naming_the_backend(workdir):
    (workdir / "tf_ops.py").write_text(TF_FACTORY)
    study = backend_study("jax-tf-ops", n_trials=2, pruner="none")
    study["data"]["dataset"], study["model"] = "diabetes", {"factory": "tf_ops:build"}
    out = hpsearch(workdir, "run", str(write_study(workdir, study)), expect=1)
    assert "every trial" in out
    _, trials = runs("jax-tf-ops")
    reasons = {t.data.tags["hpsearch.reason"] for t in trials}
    assert len(trials) == 2 and all("on the jax backend" in r and "training.backend: tensorflow" in r
                                    for r in reasons), reasons
