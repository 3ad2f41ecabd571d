"""Many workers on one study: Optuna's RDB storage on a real PostgreSQL, a real MLflow server on it too."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import optuna
import pytest
from conftest import counted_trials, free_port, tiny_study, wait_for_http, write_study
from mlflow import MlflowClient

PG = "postgresql://postgres@127.0.0.1:5432"
pytestmark = pytest.mark.slow


def _admin(sql: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    try:
        connection = psycopg.connect(f"{PG}/postgres", connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable on 127.0.0.1:5432 ({exc})")
    with connection.cursor() as cursor:
        cursor.execute(sql)
    connection.close()


@pytest.fixture
def database():
    """A fresh PostgreSQL database, dropped afterwards."""
    name = f"hpsearch_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE DATABASE {name}")
    yield f"{PG}/{name}"
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def storage(database):
    """One Optuna storage on the test's database for the test's own reads: a ``load_study`` on the URL string
    makes a new engine each time, whose connection stays open until it is collected, and a test that polls
    would use up PostgreSQL's 100 connections with them."""
    storage = optuna.storages.RDBStorage(database)
    yield storage
    storage.engine.dispose()


@pytest.fixture
def pg_mlflow_server(tmp_path):
    """``mlflow server`` with its backend store on PostgreSQL and served artifacts."""
    name = f"mlflow_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE DATABASE {name}")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"{PG}/{name}", "--artifacts-destination", str(tmp_path / "artifacts"),
         "--serve-artifacts", "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def hpsearch(*args: str) -> subprocess.Popen:
    env = {**os.environ, "HPSEARCH_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "hpsearch", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def children(server: str, experiment: str) -> tuple:
    client = MlflowClient(server)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    studies = [r for r in runs if r.data.tags.get("hpsearch.role") == "study"]
    trials = [r for r in runs if r.data.tags.get("hpsearch.role") == "trial"]
    return studies, trials


def test_two_workers_share_one_study_nothing_lost_or_duplicated(workdir, database, storage, pg_mlflow_server):
    with_password = database.replace("postgres@", "postgres:secretpw@")  # trust auth ignores it
    raw = tiny_study(name="shared", search__strategy="optuna", search__n_trials=4, search__cv=None,
                     search__pruner="none",  # every trial completes: which ones the pruner stops depends on timing
                     search__storage=with_password, tracking={"uri": pg_mlflow_server})
    path = write_study(workdir, raw)
    run = hpsearch("run", str(path), "--workers", "2")
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 0, output

    stored = counted_trials(optuna.load_study(study_name="shared", storage=storage).trials)
    assert sorted(t.number for t in stored) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in stored)
    studies, trials = children(pg_mlflow_server, "shared")
    assert len(studies) == 1 and studies[0].info.status == "FINISHED"
    assert sorted(int(t.data.tags["hpsearch.trial"]) for t in trials) == [0, 1, 2, 3]
    assert all(t.data.tags["mlflow.parentRunId"] == studies[0].info.run_id for t in trials)
    assert "test_score" in studies[0].data.metrics

    # the password is in no param, tag, artifact or output
    client = MlflowClient(pg_mlflow_server)
    recorded = [str(r.data.params) + str(r.data.tags) for r in (*studies, *trials)]
    recorded.append(client.download_artifacts(studies[0].info.run_id, "study.yaml", str(workdir)))
    recorded[-1] = open(recorded[-1]).read()
    assert "postgres:***@" in recorded[-1]
    assert not [text for text in [*recorded, output] if "secretpw" in text]


def test_killed_worker_then_resume_loses_nothing(workdir, database, storage, pg_mlflow_server):
    raw = tiny_study(name="killed", search__strategy="optuna", search__n_trials=2, search__cv=None,
                     search__storage=database, search__heartbeat=1, search__pruner="none",
                     tracking={"uri": pg_mlflow_server}, training__epochs=3000, training__early_stopping=False)
    path = write_study(workdir, raw)
    worker = hpsearch("worker", str(path))
    deadline = time.monotonic() + 120
    running = []
    while time.monotonic() < deadline and not running:
        time.sleep(1)
        try:
            stored = optuna.load_study(study_name="killed", storage=storage)
            running = [t for t in stored.trials if t.state == optuna.trial.TrialState.RUNNING]
        except KeyError:
            continue
    assert running, "the worker never started a trial"
    time.sleep(2)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    time.sleep(3)  # past the heartbeat's grace period

    resumed = hpsearch("run", str(path), "--set", "training.epochs=2")
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    states = [t.state for t in counted_trials(optuna.load_study(study_name="killed", storage=storage).trials)]
    assert states.count(optuna.trial.TrialState.FAIL) == 1  # the killed one, retried as a new trial
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2
    studies, trials = children(pg_mlflow_server, "killed")
    assert len(studies) == 1 and studies[0].info.status == "FINISHED"
    assert not [t for t in trials if t.info.status == "RUNNING"]
    (killed,) = [t for t in trials if t.info.status == "KILLED"]
    assert "heartbeats" in killed.data.tags["hpsearch.reason"]
    assert sum(t.data.tags["hpsearch.state"] == "finished" for t in trials) == 2


def test_workers_started_together_on_a_new_study_share_one_study_run(workdir, database, pg_mlflow_server):
    raw = tiny_study(name="together", search__strategy="optuna", search__n_trials=4, search__cv=None,
                     search__storage=database, tracking={"uri": pg_mlflow_server})
    path = write_study(workdir, raw)
    workers = [hpsearch("worker", str(path), "--threads", "1") for _ in range(2)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    studies, trials = children(pg_mlflow_server, "together")
    assert len(studies) == 1 and studies[0].info.status == "FINISHED"  # the last worker out closed it
    assert sorted(int(t.data.tags["hpsearch.trial"]) for t in trials) == [0, 1, 2, 3]
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {studies[0].info.run_id}
    # each worker samples with a seed of its own: two workers never propose the same candidate
    assert len({(t.data.params["n_neurons"], t.data.params["learning_rate"]) for t in trials}) == 4


class Outage:
    """A TCP forwarder to PostgreSQL on a free loopback port that can go down (every connection cut, new ones
    refused, as while the server restarts) and come back on the same port."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.port, self.target = free_port(), target
        self._connections: list[socket.socket] = []
        self._listening = threading.Event()
        self.up()

    def up(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        server.settimeout(0.2)
        self._listening.set()
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        self._listening.clear()
        time.sleep(0.5)  # the accept loop closes its socket
        for connection in self._connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()
        self._connections.clear()

    def _accept(self, server: socket.socket) -> None:
        with server:
            while self._listening.is_set():
                try:
                    client, _ = server.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection(self.target)
                self._connections += [client, upstream]
                for source, sink in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_a_database_outage_mid_study_is_waited_out_nothing_lost_or_counted_twice(workdir, database, storage,
                                                                                  pg_mlflow_server):
    """The Optuna storage's PostgreSQL goes away twice while two workers run (connections cut, new ones refused for
    8 s): every call waits for it, the study finishes with each trial once."""
    outage = Outage()
    through = database.replace("127.0.0.1:5432", f"127.0.0.1:{outage.port}")
    raw = tiny_study(name="outage", search__strategy="optuna", search__n_trials=8, search__cv=None,
                     search__pruner="none", search__storage=through, tracking={"uri": pg_mlflow_server})
    run = hpsearch("run", str(write_study(workdir, raw)), "--workers", "2")
    for finished in (1, 4):  # an outage after the first finished trial, another after the fourth
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                trials = optuna.load_study(study_name="outage", storage=storage).trials
            except KeyError:
                trials = []
            if sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) >= finished:
                break
            time.sleep(0.5)
        outage.down()
        time.sleep(8)
        outage.up()
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 0, output
    assert "Traceback" not in output
    assert "does not answer" in output and "answers again" in output  # the workers said what they waited for

    stored = counted_trials(optuna.load_study(study_name="outage", storage=storage).trials)
    assert sorted(t.number for t in stored if t.state == optuna.trial.TrialState.COMPLETE) == list(range(8))
    assert not [t for t in stored if t.state == optuna.trial.TrialState.RUNNING]
    studies, trials = children(pg_mlflow_server, "outage")
    assert len(studies) == 1 and studies[0].info.status == "FINISHED"
    assert sorted(int(t.data.tags["hpsearch.trial"]) for t in trials) == list(range(8))
    assert all(t.info.status == "FINISHED" for t in trials)


def test_local_workers_get_a_cpu_each_and_a_bad_cpu_list_is_refused(tmp_path):
    from hpsearch.evaluation.cpus import cpu_groups, usable_cpus

    cpus = usable_cpus()
    assert [[cpu] for cpu in cpus] == cpu_groups(len(cpus))  # --workers N on N cores: one core each
    assert cpu_groups(len(cpus) + 1) is None  # more workers than cores: the OS places them
    for cpu_list, expected in (("0-x", "'0-x' is not a list of CPU numbers"),
                               ("4096", "--cpus: cannot run on CPUs 4096")):
        result = subprocess.run([sys.executable, "-m", "hpsearch", "worker", "study.yaml", "--cpus", cpu_list],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 2 and expected in " ".join(result.stderr.split()), result.stderr
        assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())
