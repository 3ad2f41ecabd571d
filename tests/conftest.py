"""Shared fixtures: offline runs in a scratch folder, the real California file, a real MLflow server."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

CAL_HOUSING = Path(__file__).resolve().parents[2] / "shared" / "data" / "cal_housing.csv"


def pytest_configure(config: pytest.Config) -> None:
    os.environ["HPSEARCH_OFFLINE"] = "1"  # no test may wait on the network


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so the embedded MLflow/Optuna stores land in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture
def cal_housing() -> Path:
    """The raw StatLib California housing file, read in place (skipped where it is absent)."""
    if not CAL_HOUSING.is_file():
        pytest.skip(f"{CAL_HOUSING} is absent (it lives beside the repository, in ../shared/data)")
    return CAL_HOUSING


def tiny_study(**overrides) -> dict:
    """A study small enough to train in seconds: breast cancer, 1-layer MLPs, a few epochs."""
    study = {
        "name": "tiny",
        "data": {"dataset": "breast_cancer", "test_size": 0.2, "valid_size": 0.2},
        "model": {"factory": "mlp", "params": {"optimizer": "adam"}},
        "search": {"strategy": "random", "n_trials": 2, "cv": 2,
                   "space": {"n_neurons": {"int": [4, 16]},
                             "learning_rate": {"float": [1e-3, 1e-2], "log": True}}},
        "training": {"epochs": 4, "batch_size": 64, "early_stopping": {"patience": 2}},
        "seed": 0,
    }
    for dotted, value in overrides.items():
        node = study
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return study


def write_study(folder: Path, study: dict, name: str = "study.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop(process: subprocess.Popen) -> None:
    """Terminate a server subprocess, killing it if it does not exit within 30 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``mlflow server`` subprocess on a free loopback port (SQLite backend, served artifacts)."""
    with serving_mlflow(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


@contextlib.contextmanager
def serving_mlflow(root: Path, *options: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``mlflow server [options]`` on a free loopback port, its stores and ``server.log`` in ``root``; its URL."""
    port = free_port()
    log = open(root / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", *options, "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts", "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=root,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})})  # as docker-compose.yml
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/health", process)
        yield url
    finally:
        stop(process)
        log.close()


def counted_trials(trials: list) -> list:
    """An Optuna study's trials less the surplus ones: two workers that each saw one trial left both start one,
    and the later one is recorded as a FAIL tagged ``hpsearch_surplus`` that counts nowhere (never run)."""
    return [t for t in trials if not t.user_attrs.get("hpsearch_surplus")]


def local_store(name: str = "mlflow.db") -> str:
    """The current folder's embedded store as an absolute URI (MLflow caches one store per URI string)."""
    return f"sqlite:///{Path.cwd() / name}"


def chapter_build_model(n_hidden=1, n_neurons=30, learning_rate=3e-3, input_shape=(8,)):
    """The chapter's own build_model (Keras 3 spelling), as a user would write it."""
    from hpsearch.models.backend import keras

    model = keras.Sequential([keras.Input(shape=input_shape)])
    for _ in range(n_hidden):
        model.add(keras.layers.Dense(n_neurons, activation="relu"))
    model.add(keras.layers.Dense(1))
    model.compile(loss="mse", optimizer=keras.optimizers.SGD(learning_rate=learning_rate))
    return model
