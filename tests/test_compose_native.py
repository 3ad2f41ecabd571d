"""The compose file's services run natively (there is no Docker engine here): each service's command and
environment, interpolated from an .env like .env.example's, run as real processes against the local
PostgreSQL, with only what must differ on a host substituted (host names, ports, bind address, the
artifact volume, the program's path) — and the test checks that nothing else was changed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from conftest import counted_trials, free_port, stop, tiny_study, wait_for_http, write_study
from test_compose import COMPOSE, ENV_EXAMPLE, ROOT, command_list, interpolate, read_env_file
from test_workers import _admin

pytestmark = pytest.mark.slow
SECRET = f"pw{uuid.uuid4().hex[:12]}"  # local trust auth ignores it; it must show up nowhere
N_TRIALS = 4


class Native:
    """Maps a container's view of the stack to this host's: ``service:port`` -> ``127.0.0.1:free port``,
    a service's own port and bind address, named volumes -> folders, programs -> this interpreter's."""

    def __init__(self, compose: dict, folder: Path) -> None:
        self.ports = {"5432": "5432"}  # the local PostgreSQL listens where the container's does
        self.inside: dict[str, str] = {"@postgres:5432/": "@127.0.0.1:5432/"}
        for name, service in compose["services"].items():
            for published in service.get("ports", []):
                container_port = str(published).rsplit(":", 1)[-1]
                if container_port not in self.ports:
                    self.ports[container_port] = str(free_port())
                    self.inside[f"//{name}:{container_port}"] = f"//127.0.0.1:{self.ports[container_port]}"
                    self.inside[f"//localhost:{container_port}/"] = f"//localhost:{self.ports[container_port]}/"
        self.exact = {"0.0.0.0": "127.0.0.1", **self.ports}
        for _name, service in compose["services"].items():
            for volume in service.get("volumes", []):
                source, target = volume.split(":")[:2]
                if source in compose["volumes"]:
                    self.exact[target] = str(folder / source)
        bin_dir = Path(sys.executable).parent
        self.programs = {"python": sys.executable, "mlflow": str(bin_dir / "mlflow")}

    def part(self, text: str) -> str:
        if text in self.exact:
            return self.exact[text]
        for old, new in self.inside.items():
            text = text.replace(old, new)
        return text

    def command(self, command: str | list[str]) -> list[str]:
        parts = command_list(command)
        return [self.programs.get(parts[0], parts[0])] + [self.part(p) for p in parts[1:]]

    def environment(self, service: dict) -> dict[str, str]:
        return {key: self.part(str(value)) for key, value in (service.get("environment") or {}).items()}


def changes(before: list[str] | dict, after: list[str] | dict) -> list[tuple[str, str]]:
    """The (container, native) pairs that differ, position by position (or key by key)."""
    if isinstance(before, dict):
        assert before.keys() == after.keys()
        before, after = list(before.values()), [after[k] for k in before]
    assert len(before) == len(after)
    return [(str(b), a) for b, a in zip(before, after) if str(b) != a]


@pytest.fixture
def stack_env():
    """.env.example with the local PostgreSQL's user, a throw-away password, and two fresh databases."""
    env = read_env_file(ENV_EXAMPLE)
    suffix = uuid.uuid4().hex[:8]
    env.update(POSTGRES_USER="postgres", POSTGRES_PASSWORD=SECRET, POSTGRES_DB=f"mlflow_{suffix}",
               OPTUNA_DB=f"optuna_{suffix}", HPSEARCH_STUDY="native")
    _admin(f"CREATE DATABASE {env['POSTGRES_DB']}")  # what the postgres image does with POSTGRES_DB
    try:
        yield env
    finally:
        for name in (env["POSTGRES_DB"], env["OPTUNA_DB"]):
            _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run_init_scripts(compose: dict, env: dict[str, str]) -> None:
    """The postgres image runs /docker-entrypoint-initdb.d/*.sh with its environment on a fresh volume."""
    postgres = compose["services"]["postgres"]
    (init,) = [v.split(":")[0] for v in postgres["volumes"] if ":/docker-entrypoint-initdb.d" in v]
    scripts = sorted((ROOT / init).glob("*.sh"))
    assert scripts, f"no init script in {init}"
    for script in scripts:
        assert os.access(script, os.X_OK), f"{script} must be executable (the image sources it otherwise)"
        subprocess.run([str(script)], check=True, capture_output=True, timeout=60,
                       env={**os.environ, **postgres["environment"], "PGHOST": "127.0.0.1"})


def healthcheck(service: dict, native: Native, env: dict[str, str] | None = None) -> int:
    test = service["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL")
    command = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else native.command(test[1:])
    return subprocess.run(command, check=False, env={**os.environ, **(env or {})}, timeout=30).returncode


def test_the_compose_services_run_natively_two_workers_one_study_kill_and_resume(tmp_path, stack_env):
    import mlflow
    import optuna
    from mlflow import MlflowClient
    from sklearn.datasets import load_breast_cancer

    compose = interpolate(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")), stack_env)
    services = compose["services"]
    native = Native(compose, tmp_path)
    mlflow_port, dashboard_port = native.ports["5000"], native.ports["8080"]
    run_init_scripts(compose, stack_env)

    # postgres: its healthcheck, with the container's environment, against the local server
    postgres_env = {**services["postgres"]["environment"], "PGHOST": "127.0.0.1"}
    assert healthcheck(services["postgres"], native, postgres_env) == 0

    # mlflow: the same arguments but for the host's addresses and folders
    container = command_list(services["mlflow"]["command"])
    command = native.command(services["mlflow"]["command"])
    backend = f"postgresql://postgres:{SECRET}@postgres:5432/{stack_env['POSTGRES_DB']}"
    assert changes(container, command) == [
        ("mlflow", native.programs["mlflow"]), ("0.0.0.0", "127.0.0.1"), ("5000", mlflow_port),
        (backend, backend.replace("@postgres:", "@127.0.0.1:")), ("/mlartifacts", str(tmp_path / "mlflow-artifacts"))]
    worker_env = native.environment(services["worker"])
    assert changes(services["worker"]["environment"], worker_env) == [
        ("http://mlflow:5000", f"http://127.0.0.1:{mlflow_port}"),
        (services["worker"]["environment"]["HPSEARCH_STORAGE"],
         services["worker"]["environment"]["HPSEARCH_STORAGE"].replace("@postgres:", "@127.0.0.1:"))]
    assert services["finish"]["environment"] == services["worker"]["environment"]

    logs = tmp_path / "logs"
    logs.mkdir()
    processes: list[subprocess.Popen] = []

    def start(name: str, service: str) -> subprocess.Popen:
        with open(logs / f"{name}.log", "w") as log:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(native.command(services[service]["command"]), cwd=tmp_path,
                                       env={**os.environ, **native.environment(services[service])},
                                       stdout=log, stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    def output(name: str) -> str:
        return (logs / f"{name}.log").read_text(encoding="utf-8", errors="replace")

    studies = tmp_path / "studies"  # the worker's ./studies mount
    studies.mkdir()
    write_study(studies, tiny_study(
        name="native", search__strategy="optuna", search__n_trials=N_TRIALS, search__cv=None,
        search__pruner="none", search__heartbeat=1, training__epochs=100, training__early_stopping=False),
        name=f"{stack_env['HPSEARCH_STUDY']}.yaml")
    try:
        server = start("mlflow", "mlflow")
        wait_for_http(f"http://127.0.0.1:{mlflow_port}/health", server, timeout=180)
        assert healthcheck(services["mlflow"], native) == 0
        api = f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/experiments/search?max_results=1"
        assert requests.get(api, headers={"Host": "mlflow:5000"}, timeout=10).status_code == 200  # the workers'
        assert requests.get(api, headers={"Host": "attacker.example"}, timeout=10).status_code == 403

        dashboard = start("dashboard", "optuna-dashboard")
        assert changes(command_list(services["optuna-dashboard"]["command"]), dashboard.args) == [
            ("python", sys.executable), ("0.0.0.0", "127.0.0.1"), ("8080", dashboard_port)]
        wait_for_http(f"http://127.0.0.1:{dashboard_port}/", dashboard, timeout=120)
        assert healthcheck(services["optuna-dashboard"], native) == 0

        # two workers at once, as `docker compose up --scale worker=2` starts them
        first, second = start("worker-1", "worker"), start("worker-2", "worker")
        assert first.args == [sys.executable, "-m", "hpsearch", "worker", "studies/native.yaml", "--threads", "1"]
        storage = worker_env["HPSEARCH_STORAGE"]

        def running_trial_runs() -> int:
            """Trial runs open in MLflow (a trial's run is created a moment after Optuna starts the trial)."""
            client = MlflowClient(f"http://127.0.0.1:{mlflow_port}")
            experiment = client.get_experiment_by_name("native")
            if experiment is None:
                return 0
            runs = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
            return sum(r.data.tags.get("hpsearch.role") == "trial" for r in runs)

        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # kill one worker in the middle of its trial (SIGKILL: no goodbye)
            assert first.poll() is None and second.poll() is None, output("worker-1") + output("worker-2")
            try:
                trials = optuna.load_study(study_name="native", storage=storage).get_trials(deepcopy=False)
            except KeyError:
                trials = []
            if sum(t.state == optuna.trial.TrialState.RUNNING for t in trials) == 2 and running_trial_runs() == 2:
                break
            time.sleep(0.3)
        else:
            pytest.fail("the two workers never ran trials at the same time\n" + output("worker-1"))
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        restarted = start("worker-3", "worker")  # `docker compose up -d` again
        for name, worker in (("worker-2", second), ("worker-3", restarted)):
            assert worker.wait(timeout=600) == 0, output(name)

        finish = start("finish", "finish")  # `docker compose run --rm finish`
        assert finish.wait(timeout=600) == 0, output("finish")

        stored = counted_trials(optuna.load_study(study_name="native", storage=storage).get_trials(deepcopy=False))
        states = [t.state for t in stored]
        assert states.count(optuna.trial.TrialState.COMPLETE) == N_TRIALS
        assert states.count(optuna.trial.TrialState.FAIL) == 1  # the killed worker's, retried
        assert len(states) == N_TRIALS + 1

        tracking = f"http://127.0.0.1:{mlflow_port}"
        client = MlflowClient(tracking)
        runs = client.search_runs([client.get_experiment_by_name("native").experiment_id])
        (study_run,) = [r for r in runs if r.data.tags.get("hpsearch.role") == "study"]
        trial_runs = [r for r in runs if r.data.tags.get("hpsearch.role") == "trial"]
        assert study_run.info.status == "FINISHED"
        assert {"best_score", "test_score"} <= set(study_run.data.metrics)
        assert study_run.data.metrics["trials_finished"] == N_TRIALS
        assert any(a.path == "model" for a in client.list_artifacts(study_run.info.run_id))
        assert all(r.data.tags["mlflow.parentRunId"] == study_run.info.run_id for r in trial_runs)
        assert not [r for r in trial_runs if r.info.status == "RUNNING"]
        finished = [r for r in trial_runs if r.data.tags["hpsearch.state"] == "finished"]
        assert sorted(int(r.data.tags["hpsearch.trial"]) for r in finished) == sorted(
            t.number for t in stored if t.state == optuna.trial.TrialState.COMPLETE)
        assert all(r.info.status == "FINISHED" for r in finished)
        (killed,) = [r for r in trial_runs if r.info.status == "KILLED"]
        assert "heartbeats" in killed.data.tags["hpsearch.reason"]
        assert len(trial_runs) == N_TRIALS + 1

        mlflow.set_tracking_uri(tracking)
        champion = mlflow.sklearn.load_model("models:/native-best@champion")
        X = load_breast_cancer().data[:5]
        assert champion.predict(X).shape[0] == 5

        # the dashboard shows the study; the password is in no param, tag, log or the dashboard's answer
        listing = requests.get(f"http://127.0.0.1:{dashboard_port}/api/studies", timeout=10)
        assert listing.ok and "native" in listing.text
        recorded = [str(r.data.params) + str(r.data.tags) for r in runs]
        recorded += [output(name) for name in ("worker-2", "worker-3", "finish", "dashboard")] + [listing.text]
        assert not [text for text in recorded if SECRET in text]
    finally:
        for process in processes:
            stop(process)


def test_native_substitution_leaves_every_other_argument_alone(tmp_path):
    """The host mapping touches only addresses, ports, volumes and program paths, nothing a study depends on."""
    env = {**read_env_file(ENV_EXAMPLE), "POSTGRES_PASSWORD": SECRET}
    compose = interpolate(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")), env)
    native = Native(compose, tmp_path)
    for name, service in compose["services"].items():
        if "command" not in service:
            continue
        for before, after in changes(command_list(service["command"]), native.command(service["command"])):
            assert before in ("python", "mlflow", "0.0.0.0", "5000", "8080", "/mlartifacts") or (
                "@postgres:5432/" in before and after == before.replace("@postgres:", "@127.0.0.1:")), (name, before)
        for before, after in changes(service.get("environment") or {}, native.environment(service)):
            assert after in (before.replace("@postgres:", "@127.0.0.1:"),
                             before.replace("//mlflow:5000", f"//127.0.0.1:{native.ports['5000']}")), (name, before)
