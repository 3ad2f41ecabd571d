"""The deployment files, checked by reading them (no Docker engine needed): docker-compose.yml, Dockerfile,
.env.example. Compose's variable interpolation is reproduced by :func:`interpolate`."""

from __future__ import annotations

import re
import shlex
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from hpsearch.config.loading import load_study

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

# $$ (a literal $), ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}, $NAME
_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
                       r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


class MissingVariable(KeyError):
    """A ``${NAME:?message}`` whose NAME is unset (or empty)."""


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Expand Compose variables in every string of ``value`` (mappings, lists, scalars) from ``env``."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def expand(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg, current = match["op"], match["arg"] or "", env.get(name)
        unset = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if unset else current
        if op in (":?", "?") and unset:
            raise MissingVariable(f"{name}: {arg or 'required'}")
        return current or ""

    return _VARIABLE.sub(expand, value)


def references(text: str) -> dict[str, set[str | None]]:
    """Every variable a text refers to -> the operators it is used with (``:?``, ``:-``... or None for a
    plain ``${NAME}``); ``$$`` escapes are not references."""
    found: dict[str, set[str | None]] = {}
    for match in _VARIABLE.finditer(text):
        if not match["escaped"]:
            found.setdefault(match["braced"] or match["bare"], set()).add(match["op"])
    return found


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: {line!r} is not KEY=value"
            env[key.strip()] = value.strip().strip("'\"")
    return env


def command_list(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def option(command: list[str], name: str) -> str:
    assert name in command, f"{name} is missing from {command}"
    return command[command.index(name) + 1]


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in lines if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(raw: dict, env_example: dict[str, str]) -> dict:
    """The compose file as ``docker compose config`` would see it with .env copied from .env.example."""
    return interpolate(raw, env_example)


# --- the interpolation helper itself ---------------------------------------------------------------------

def test_interpolate_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET}-${UNSET}-$SET", env) == "x--x"
    assert interpolate("${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${SET:-d}", env) == "d d  x"
    assert interpolate("$${SET} $$SET", env) == "${SET} $SET"
    assert interpolate({"k": ["${SET:?needed}", 5]}, env) == {"k": ["x", 5]}
    with pytest.raises(MissingVariable, match="UNSET: needed"):
        interpolate("${UNSET:?needed}", env)
    with pytest.raises(MissingVariable):
        interpolate("${EMPTY:?needed}", env)
    assert references("$${NOPE} ${A:?m} ${B:-d} $C ${A}") == {"A": {":?", None}, "B": {":-"}, "C": {None}}


# --- docker-compose.yml ----------------------------------------------------------------------------------

def test_compose_parses_with_the_services(raw: dict) -> None:
    assert isinstance(raw, dict)
    assert "version" not in raw, "the Compose spec has no version: key"
    assert {"postgres", "mlflow", "worker", "finish", "optuna-dashboard"} <= set(raw["services"])
    assert raw["services"]["postgres"]["image"].startswith("postgres:16")


def test_every_published_port_is_bound_to_loopback(compose: dict) -> None:
    published = 0
    for name, service in compose["services"].items():
        assert service.get("network_mode") != "host", f"{name} uses the host network"
        for port in service.get("ports", []):
            published += 1
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:
                parts = str(port).rsplit(":", 2)
                host_ip = parts[0] if len(parts) == 3 else None
            assert host_ip == "127.0.0.1", f"{name} publishes {port!r} on every interface"
    assert published >= 3
    assert "127.0.0.1:5000:5000" in compose["services"]["mlflow"]["ports"]
    assert "127.0.0.1:8080:8080" in compose["services"]["optuna-dashboard"]["ports"]


def test_no_password_is_written_in_the_compose_file(raw: dict, env_example: dict[str, str]) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert env_example["POSTGRES_PASSWORD"] not in text
    assert "POSTGRES_PASSWORD" in references(text)
    for name, ops in references(text).items():
        if re.search(r"PASS|SECRET|TOKEN", name):
            assert ops <= {":?", "?"}, f"${{{name}}} must be required (:?) everywhere: a default would be committed"

    def strings(node: Any, where: str):
        if isinstance(node, dict):
            for key, item in node.items():
                yield from strings(item, f"{where}.{key}")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                yield from strings(item, f"{where}[{index}]")
        else:
            yield where, node

    only_reference = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")  # ${NAME} or ${NAME:?message}
    for where, value in strings(raw, "compose"):
        if re.search(r"pass(word)?|secret|token", where.rsplit(".", 1)[-1], re.IGNORECASE):
            assert isinstance(value, str) and only_reference.match(value), f"{where} = {value!r}"
        if isinstance(value, str) and "://" in value:
            password = urlsplit(value).password if "@" in value else None
            assert password is None or only_reference.match(password), f"{where} holds a password"


def test_the_compose_file_refuses_to_start_without_a_password(raw: dict, env_example: dict[str, str]) -> None:
    without = {key: value for key, value in env_example.items() if key != "POSTGRES_PASSWORD"}
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        interpolate(raw, without)


def test_env_example_defines_every_variable_the_compose_file_uses(env_example: dict[str, str]) -> None:
    used = references(COMPOSE.read_text(encoding="utf-8"))
    required = {name for name, ops in used.items() if ops & {":?", "?", None}}
    assert required <= set(env_example), f"missing from .env.example: {sorted(required - set(env_example))}"
    assert set(used) <= set(env_example), f"undocumented in .env.example: {sorted(set(used) - set(env_example))}"
    assert env_example["POSTGRES_PASSWORD"] == "change-me"
    assert not (ROOT / ".env").exists() or ".env" in (ROOT / ".gitignore").read_text(), ".env must stay uncommitted"


def test_every_server_has_a_healthcheck_and_waits_for_healthy_dependencies(compose: dict) -> None:
    services = compose["services"]
    postgres, mlflow, dashboard = services["postgres"], services["mlflow"], services["optuna-dashboard"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert "http://localhost:5000/health" in " ".join(mlflow["healthcheck"]["test"])
    assert "http://localhost:8080/" in " ".join(dashboard["healthcheck"]["test"])
    for name, service in services.items():
        if service.get("ports"):  # a server: the jobs (worker, finish) exit when done and have none
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
            assert service.get("restart") == "unless-stopped", name
        test = (service.get("healthcheck") or {}).get("test", [])
        if test[:1] == ["CMD"] and service.get("build"):
            assert test[1] == "python", "the slim image has no curl"
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert condition["condition"] == "service_healthy", f"{name} must wait until {dependency} is healthy"
    assert {"postgres", "mlflow"} <= set(services["worker"]["depends_on"])
    volumes = set(compose["volumes"])
    assert any(v.split(":")[0] in volumes and v.split(":")[1] == "/var/lib/postgresql/data"
               for v in postgres["volumes"])


def test_mlflow_serves_artifacts_from_a_volume_and_stores_runs_in_postgres(
        compose: dict, env_example: dict[str, str]) -> None:
    mlflow = compose["services"]["mlflow"]
    command = command_list(mlflow["command"])
    assert command[:2] == ["mlflow", "server"]
    assert option(command, "--host") == "0.0.0.0" and option(command, "--port") == "5000"
    assert "--serve-artifacts" in command
    destination = option(command, "--artifacts-destination")
    assert any(v.split(":")[0] in compose["volumes"] and v.split(":")[1] == destination for v in mlflow["volumes"])

    backend = urlsplit(option(command, "--backend-store-uri"))
    postgres_env = compose["services"]["postgres"]["environment"]
    assert backend.scheme.split("+")[0] == "postgresql"
    assert (backend.hostname, backend.port) == ("postgres", 5432)
    assert backend.username == postgres_env["POSTGRES_USER"] == env_example["POSTGRES_USER"]
    assert backend.password == postgres_env["POSTGRES_PASSWORD"] == env_example["POSTGRES_PASSWORD"]
    assert backend.path.lstrip("/") == postgres_env["POSTGRES_DB"] == env_example["POSTGRES_DB"]


def test_mlflow_serves_requests_on_gunicorn_threads(compose: dict) -> None:
    """Cheaper per request than MLflow's default uvicorn, and a slow upload does not hold up the other requests."""
    command = command_list(compose["services"]["mlflow"]["command"])
    opts = option(command, "--gunicorn-opts").split()
    assert option(opts, "--worker-class") == "gthread" and int(option(opts, "--threads")) > 1


def test_mlflow_accepts_the_host_name_the_worker_uses(compose: dict) -> None:
    """MLflow 3 rejects unknown Host headers with 403 (only /health is exempt, so the healthcheck passes);
    the native test sends the worker's Host header to the server run from this configuration."""
    tracking = urlsplit(compose["services"]["worker"]["environment"]["MLFLOW_TRACKING_URI"])
    allowed = compose["services"]["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    for host in (tracking.netloc, "127.0.0.1:5000", "localhost:5000"):
        assert any(fnmatch(host, pattern) if "*" in pattern else host == pattern for pattern in allowed), host


def test_worker_tracks_in_mlflow_and_shares_the_optuna_storage_in_its_own_database(
        compose: dict, env_example: dict[str, str]) -> None:
    worker, postgres = compose["services"]["worker"], compose["services"]["postgres"]
    environment = worker["environment"]
    assert environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert str(environment["HPSEARCH_OFFLINE"]) == "1"
    storage = urlsplit(environment["HPSEARCH_STORAGE"])
    assert storage.scheme == "postgresql" and (storage.hostname, storage.port) == ("postgres", 5432)
    assert (storage.username, storage.password) == (env_example["POSTGRES_USER"], env_example["POSTGRES_PASSWORD"])
    assert storage.path.lstrip("/") == postgres["environment"]["OPTUNA_DB"] == env_example["OPTUNA_DB"]
    assert env_example["OPTUNA_DB"] != env_example["POSTGRES_DB"], "Optuna and MLflow both own an alembic_version"
    assert not any(env_example["POSTGRES_PASSWORD"] in part for part in command_list(worker["command"]))
    for name in ("finish", "optuna-dashboard"):
        assert compose["services"][name]["environment"]["HPSEARCH_STORAGE"] == environment["HPSEARCH_STORAGE"]
    assert compose["services"]["finish"]["environment"] == environment
    for name in ("worker", "finish"):
        assert any(v.startswith("./studies:/app/studies") and v.endswith(":ro")
                   for v in compose["services"][name]["volumes"])
    builds = {compose["services"][name]["build"]["dockerfile"]
              for name in ("mlflow", "worker", "finish", "optuna-dashboard")}
    assert builds == {"Dockerfile"}, "one image for the servers and the jobs"


def test_postgres_creates_the_optuna_database_on_first_start(compose: dict) -> None:
    postgres = compose["services"]["postgres"]
    (mount,) = [v for v in postgres["volumes"] if v.split(":")[1] == "/docker-entrypoint-initdb.d"]
    assert mount.startswith("./") and mount.endswith(":ro")
    scripts = sorted((ROOT / mount.split(":")[0]).iterdir())
    assert scripts and all(s.suffix in (".sh", ".sql") for s in scripts)
    text = "".join(s.read_text(encoding="utf-8") for s in scripts)
    assert "OPTUNA_DB" in text and "CREATE DATABASE" in text
    assert (ROOT / ".dockerignore").is_file()


def test_worker_is_scalable(raw: dict) -> None:
    """``docker compose up --scale worker=4``: no fixed container name or host port, no fixed replica count
    above one, and a stop signal hpsearch handles (open runs end as KILLED)."""
    worker = raw["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker and "hostname" not in worker
    assert (worker.get("deploy") or {}).get("replicas", 1) == 1
    assert worker["stop_signal"] == "SIGINT"
    assert worker.get("restart", "no") == "no", "a worker exits when its study is done; restarting would loop"
    assert "profiles" not in worker and raw["services"]["finish"]["profiles"] == ["finish"]


@pytest.mark.parametrize("env_source", ["defaults", ".env.example"])
def test_worker_and_finish_run_an_optuna_study_that_exists(raw: dict, env_example: dict[str, str],
                                                           env_source: str) -> None:
    env = dict(env_example) if env_source == ".env.example" else {
        key: value for key, value in env_example.items() if key not in ("HPSEARCH_STUDY", "HPSEARCH_THREADS")}
    services = interpolate(raw, env)["services"]
    worker, finish = command_list(services["worker"]["command"]), command_list(services["finish"]["command"])
    assert worker[:4] == ["python", "-m", "hpsearch", "worker"] and option(worker, "--threads") == "1"
    assert finish == ["python", "-m", "hpsearch", "run", worker[4]]
    study = worker[4]
    assert study == "studies/service.yaml", "the default study"
    assert (ROOT / study).is_file(), f"{study} is not in studies/"
    config = load_study(ROOT / study)
    assert config.search.strategy == "optuna", "hpsearch worker needs an Optuna study"
    raw_study = yaml.safe_load((ROOT / study).read_text(encoding="utf-8"))
    assert "storage" not in raw_study["search"] and "uri" not in raw_study.get("tracking", {}), \
        "the service's study takes its storage and tracking server from the environment"


def test_readme_shows_the_service_set_up(compose: dict) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Service set-up (Docker Compose)"):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
    for text in ("cp .env.example .env", "docker compose up -d", "docker compose up -d --scale worker=4",
                 "docker compose run --rm finish", "docker compose down", "HPSEARCH_STUDY=", "--threads"):
        assert text in section, text
    for name, service in compose["services"].items():
        assert f"`{name}`" in section, f"the README's table lacks the {name} service"
        for port in service.get("ports", []):
            host, published, _ = port.split(":")
            assert f"{host}:{published}" in section, port


# --- Dockerfile ------------------------------------------------------------------------------------------

def test_dockerfile_copies_what_pip_install_needs_before_installing() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    readme = pyproject["project"]["readme"]
    readme = readme if isinstance(readme, str) else readme["file"]
    install = next(i for i, (op, args) in enumerate(instructions) if op == "RUN" and "pip install" in args)
    assert "--no-cache-dir \".[postgres,dashboard]\"" in instructions[install][1]  # psycopg 3, optuna-dashboard
    extras = pyproject["project"]["optional-dependencies"]
    assert any(r.startswith("optuna-dashboard") for r in extras["dashboard"])
    copied_before = [src for op, args in instructions[:install] if op == "COPY" for src in args.split()[:-1]]
    for needed in ("pyproject.toml", readme, "hpsearch/"):
        assert needed in copied_before, f"{needed} must be copied before pip install"
    studies = next(i for i, (op, args) in enumerate(instructions) if op == "COPY" and args.startswith("studies"))
    assert studies > install, "copy studies/ after pip install, so editing a study keeps the install layer"
    assert ("WORKDIR", "/app") in instructions
    env = " ".join(args for op, args in instructions if op == "ENV")
    assert "TF_CPP_MIN_LOG_LEVEL=3" in env and "PYTHONUNBUFFERED=1" in env
    assert instructions[-1] == ("CMD", '["python", "-m", "hpsearch", "--help"]')


def test_every_file_the_dockerfile_copies_exists() -> None:
    """``docker build`` fails on a missing COPY source (and ``pip install .`` on a missing readme)."""
    for op, args in dockerfile_instructions():
        if op == "COPY":
            for source in args.split()[:-1]:
                if not source.startswith("--"):
                    assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"


def test_dockerfile_runs_as_a_non_root_user_who_owns_the_artifact_volume() -> None:
    instructions = dockerfile_instructions()
    users = [(i, args.split(":")[0]) for i, (op, args) in enumerate(instructions) if op == "USER"]
    assert users, "no USER instruction: the image would run as root"
    last, user = users[-1]
    assert user not in ("root", "0")
    assert last < next(i for i, (op, _) in enumerate(instructions) if op == "CMD")
    # A fresh named volume takes its mount point's owner from the image.
    setup = " ".join(args for op, args in instructions if op == "RUN")
    assert "/mlartifacts" in setup and re.search(rf"chown \S*{user}\S* [^&]*/mlartifacts", setup)


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    for entry in (".git", ".env", "mlflow.db", "optuna.db", "mlartifacts", "mlruns", "**/__pycache__", ".venv",
                  ".pytest_cache"):
        assert entry in ignored, entry
    assert not {"hpsearch", "studies", "pyproject.toml", "README.md"} & ignored
