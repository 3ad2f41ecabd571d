"""Shared pieces of the benchmarks: the chapter's data, studies, an MLflow server, timing and the results table.

Every benchmark module exposes ``run(quick: bool, data: Path) -> list[Figure]`` and a ``main()`` that runs it
alone (``python benchmarks/<name>.py [--quick] [--data FILE] [--json FILE]``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cal_housing.csv"
CHAPTER_STUDY = REPO / "studies" / "california_housing.yaml"
COMPOSE = REPO / "docker-compose.yml"
SEED = 42

os.environ.setdefault("HPSEARCH_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@dataclass
class Figure:
    """One measured figure, optionally checked against the issue's target."""

    benchmark: str
    name: str
    value: float
    unit: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""

    def shown(self) -> str:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return "n/a"
        if self.unit == "x" or abs(self.value) < 10:
            return f"{self.value:.3g}{' ' + self.unit if self.unit and self.unit != 'x' else 'x' if self.unit else ''}"
        return f"{self.value:,.0f} {self.unit}".strip()

    @property
    def verdict(self) -> str:
        return "" if self.met is None else ("PASS" if self.met else "MISS")


def check(value: float, target: float, at_most: bool) -> bool:
    """Whether ``value`` meets ``target`` (``<=`` when ``at_most``, else ``>=``); NaN never does."""
    if value is None or math.isnan(value):
        return False
    return value <= target if at_most else value >= target


# -- data -----------------------------------------------------------------------------------------


def data_file(path: str | Path | None) -> Path:
    """The raw StatLib cal_housing.csv, read in place; a clear error when it is absent."""
    found = Path(path or DEFAULT_DATA).expanduser().resolve()
    if not found.is_file():
        raise SystemExit(f"benchmarks: the California housing file {found} is missing. The benchmarks read the raw "
                         "StatLib cal_housing.csv in place (default ../shared/data/cal_housing.csv relative to the "
                         "repository); pass --data FILE to point at it. Do not copy it into the repository.")
    return found


@dataclass
class Split:
    """The chapter's split: train_test_split(random_state=42) twice; float64 features, unscaled."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray

    def scaled(self) -> Split:
        """StandardScaler fitted on the training split, applied to all three (the chapter's scaling)."""
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(self.X_train)
        return Split(scaler.transform(self.X_train), self.y_train, scaler.transform(self.X_valid), self.y_valid,
                     scaler.transform(self.X_test), self.y_test)


def load_split(path: Path, max_rows: int | None = None) -> Split:
    """The same rows and split hpsearch builds from ``data.path`` (and ``data.max_rows``) with seed 42."""
    from hpsearch.config.schema import DataConfig
    from hpsearch.data.loading import load_dataset

    data = load_dataset(DataConfig(dataset="california_housing", path=path, max_rows=max_rows), SEED)
    arrays = (data.X_train, data.y_train, data.X_valid, data.y_valid, data.X_test, data.y_test)
    return Split(*(np.asarray(a, dtype=np.float64) for a in arrays))


def chapter_raw(data: Path, workdir: Path, overrides: list[str]) -> dict[str, Any]:
    """studies/california_housing.yaml with ``overrides`` (``--set`` syntax), the data path and a local store."""
    from hpsearch.config.loading import apply_overrides, read_yaml

    base = [f"data.path={data}", f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}", "search.storage=null"]
    return apply_overrides(read_yaml(CHAPTER_STUDY), base + list(overrides))


TINY_SPACE = ("search.space={n_hidden: {int: [0, 2]}, n_neurons: {int: [1, 16]}, "
              "learning_rate: {float: [3.0e-4, 3.0e-2], log: true}}")


def tiny_raw(data: Path, workdir: Path, name: str, overrides: list[str] = ()) -> dict[str, Any]:
    """Many short trials: 1,000 rows, 5 epochs, small MLPs, holdout scoring, random search."""
    return chapter_raw(data, workdir, [
        f"name={name}", "data.max_rows=1000", "search.cv=null", "training.epochs=5", "search.n_trials=20",
        TINY_SPACE, *overrides])


def as_study(raw: dict[str, Any]) -> tuple[Any, str]:
    """(validated StudyConfig, its YAML text) of a study mapping."""
    from hpsearch.config.loading import parse_study

    text = yaml.safe_dump(raw, sort_keys=False)
    return parse_study(raw, source="benchmark"), text


def write_study(raw: dict[str, Any], folder: Path, name: str = "study.yaml") -> Path:
    """The study mapping as a YAML file (for the CLI)."""
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def run_untracked(study: Any, text: str, observer: Any = None) -> Any:
    """``run_study`` with ``tracking.enabled: false``: the same search, nothing recorded."""
    from hpsearch.run.study import run_study

    off = study.model_copy(update={"tracking": study.tracking.model_copy(update={"enabled": False})})
    return run_study(off, text, observer=observer)


class Clock:
    """A TrialObserver that timestamps the search start and every trial end (and can sample anything then)."""

    def __init__(self, on_trial: Callable[[int], None] | None = None) -> None:
        self.started = math.nan
        self.ends: list[float] = []
        self.on_trial = on_trial

    def search_started(self, n_trials: int) -> None:
        self.started = time.perf_counter()

    def trial_started(self, number: int, n_folds: int, epochs: int) -> None:
        pass

    def epoch_ended(self, fold: int, epoch: int, logs: dict[str, float]) -> None:
        pass

    def trial_ended(self, result: Any) -> None:
        self.ends.append(time.perf_counter())
        if self.on_trial is not None:
            self.on_trial(len(self.ends))

    def per_minute(self) -> float:
        """Trials per minute from the search start to the last trial's end (refit and report excluded)."""
        return 60 * len(self.ends) / (self.ends[-1] - self.started) if self.ends else math.nan


# -- processes --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A running ``mlflow server``: its URL and its processes (the server starts its web workers as children)."""

    url: str
    process: subprocess.Popen

    def cpu_seconds(self) -> float:
        """CPU time the server's processes have used so far."""
        import psutil

        root = psutil.Process(self.process.pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
        return total


def compose_web_server() -> list[str]:
    """The ``--gunicorn-opts`` option and value docker-compose.yml's ``mlflow server`` command has."""
    command = [str(part) for part in
               yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]["mlflow"]["command"]]
    start = command.index("--gunicorn-opts")
    return command[start:start + 2]


@contextlib.contextmanager
def mlflow_server(root: Path, timeout: float = 120.0) -> Iterator[Server]:
    """A real ``mlflow server`` subprocess (SQLite backend, served artifacts) on a free loopback port, on the web
    server docker-compose.yml gives it (gunicorn's threaded workers) and without MLflow's job runner, as there."""
    import requests

    port = free_port()
    log = open(root / "server.log", "w")  # noqa: SIM115  (closed below, after the process)
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts"),
         "--serve-artifacts", "--workers", "1", *compose_web_server()], stdout=log, stderr=subprocess.STDOUT, cwd=root,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {process.returncode}; see {root / 'server.log'}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(url + "/health", timeout=2).ok:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server did not answer within {timeout} s")
            time.sleep(0.5)
        yield Server(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary working directory (the benchmark's MLflow/Optuna stores go there)."""
    previous = Path.cwd()
    with tempfile.TemporaryDirectory(prefix=f"hpsearch-bench-{prefix}-") as folder:
        os.chdir(folder)
        try:
            yield Path(folder)
        finally:
            os.chdir(previous)


def child_json(script: str, args: list[str], cwd: Path) -> dict[str, Any]:
    """The JSON that ``python script --child args...`` prints as its last line, run in ``cwd`` without this
    process's ``KERAS_BACKEND`` (Keras fixes its backend per process: the child's study picks its own)."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    done = subprocess.run([sys.executable, script, "--child", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(script).name} --child {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    """(result, wall seconds) of ``function()``."""
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


# -- output -----------------------------------------------------------------------------------------


def table(figures: list[Figure]) -> str:
    """A plain-text table of the figures."""
    rows = [(f.benchmark, f.name, f.shown(), f.target, f.verdict, f.note) for f in figures]
    header = ("benchmark", "figure", "value", "target", "met", "note")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(figures: list[Figure]) -> str:
    """The figures as a markdown table (for benchmarks/RESULTS.md)."""
    lines = ["| benchmark | figure | value | target | met? | note |", "|---|---|---|---|---|---|"]
    for f in figures:
        lines.append(f"| {f.benchmark} | {f.name} | {f.shown()} | {f.target} | {f.verdict or '-'} | {f.note} |")
    return "\n".join(lines)


def save_json(figures: list[Figure], path: Path) -> None:
    path.write_text(json.dumps([asdict(f) for f in figures], indent=1), encoding="utf-8")


def load_json(path: Path) -> list[Figure]:
    return [Figure(**item) for item in json.loads(path.read_text(encoding="utf-8"))]


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark takes."""
    parsed = argparse.ArgumentParser(description=description)
    parsed.add_argument("--quick", action="store_true", help="a small, indicative run (minutes, not tens of them)")
    parsed.add_argument("--data", default=None, help=f"the raw StatLib cal_housing.csv (default {DEFAULT_DATA})")
    parsed.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parsed


def main_for(name: str, run: Callable[[bool, Path], list[Figure]], description: str) -> None:
    """``python benchmarks/<name>.py``: run one benchmark, print its table (and save JSON when asked)."""
    args = parser(description).parse_args()
    data = data_file(args.data)
    import hpsearch.models.backend  # noqa: F401  (TensorFlow's start-up logs silenced before anything imports it)

    started = time.perf_counter()
    figures = run(args.quick, data)
    print(f"\n{name}: {time.perf_counter() - started:.0f} s{' (--quick: indicative only)' if args.quick else ''}")
    print(table(figures))
    if args.json:
        save_json(figures, Path(args.json))
