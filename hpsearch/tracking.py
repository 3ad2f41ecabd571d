"""MLflow tracking (with :mod:`hpsearch.sync`, the only modules that import mlflow).

Layout of one study (the contract users and tests rely on):
- an experiment per study (``tracking.experiment`` or the study name);
- one *study run* (tag ``hpsearch.role=study``): the study file, strategy, space, data fingerprint,
  package versions and seed; at the end the best params/score, the refit best model's test score
  and the refit best model (``model/``, loads with ``mlflow.sklearn.load_model``);
- one *trial run* per trial (child: tag ``mlflow.parentRunId``): sampled params, per-epoch curves
  as step metrics (``loss``, ``val_loss``, every compiled metric; ``fold<k>/`` prefixed when
  cross-validating), ``score``/``score_std``/``fold<k>/score``, ``epochs``, ``duration_s``, tag
  ``hpsearch.state`` (finished / pruned / failed) and ``hpsearch.reason``, and the trained model
  (the first fold's) under ``model/``.
Metrics go out in batches (``log_batch``), at most one call every five seconds per trial. A trial's curves
and its model upload go out on one upload thread, in order, while training goes on; the study's report is drawn
in a child process during the refit.
A server that fails is retried with backoff (``$HPSEARCH_TRACKING_RETRY_SECONDS`` per operation); what it
missed is kept and sent when it answers again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cloudpickle
import mlflow
import mlflow.sklearn
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunInfo, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from hpsearch.config import tracking_uri as resolve_uri
from hpsearch.errors import ConfigError, TrackingError, mask_credentials, mask_credentials_in_text
from hpsearch.importance import param_importances
from hpsearch.recorded import StudyRecord, TrialRecord, parse_param
from hpsearch.results import StudyResult, TrialResult

PACKAGES = ("hpsearch", "tensorflow", "keras", "scikeras", "scikit-learn", "optuna", "mlflow", "numpy", "scipy")
# Every request costs the server ~3-10 ms of CPU, taken from training when both share the machine.
_FLUSH_SECONDS = 5.0
_MAX_FLUSH_BACKOFF = 60.0  # a failed curve upload is tried again after 10, 20, ... at most 60 s
_MAX_DELAY = 15.0  # between two tries of a failed tracking call
_TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}
RETRY_SECONDS_VAR = "HPSEARCH_TRACKING_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 120.0
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# MLflow prints a "View run" link (after an extra request) every time a run on a server ends: one per trial.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# MLflow's own HTTP retries (7 tries over ~4 minutes by default) would make every call to a server that is gone
# block for minutes; hpsearch retries around them within its own budget. Values set by the user win.
for _var, _value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                     ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")):
    os.environ.setdefault(_var, _value)
_log = logging.getLogger(__name__)
# MLflow's chatter (schema migrations, the pickle-format caution we chose knowingly) is not the user's concern.
for _name, _level in (("mlflow", logging.WARNING), ("mlflow.sklearn", logging.ERROR), ("alembic", logging.WARNING)):
    logging.getLogger(_name).setLevel(_level)
_MAX_BATCH, _MAX_BATCH_PARAMS, _MAX_BATCH_TAGS = 1000, 100, 100  # MLflow's log_batch limits
_REPORT_SECONDS = 600.0
# ``python -m hpsearch.report`` at a lower CPU priority (os.nice: POSIX only)
_REPORT_PROCESS = ("import os, runpy; hasattr(os, 'nice') and os.nice(10); "
                   "runpy.run_module('hpsearch.report', run_name='__main__', alter_sys=True)")
STATUS = {"finished": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}


@cache
def package_versions() -> dict[str, str]:
    """Installed versions of the packages a study's results depend on (read once per process)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@cache
def _pip_requirements() -> list[str]:
    versions = package_versions()
    return [f"{name}=={versions[name]}" for name in ("tensorflow", "keras", "scikeras", "scikit-learn")
            if name in versions]


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]


def registry_name(study_name: str) -> str:
    """The registered-model name of a study's best model (alias ``champion``)."""
    return f"{study_name}-best"


def experiment_named(client: MlflowClient, name: str) -> Any:
    """The MLflow experiment ``name`` at the client's store; :class:`TrackingError` where there is none."""
    found = client.get_experiment_by_name(name)
    if found is None:
        raise TrackingError(f"no MLflow experiment named {name!r} at {mask_credentials(client.tracking_uri)}")
    return found


def latest_study_run(experiment: str, tracking_uri: str | None = None) -> tuple[MlflowClient, Any]:
    """(client, the newest finished study run with a best model) of ``experiment``."""
    client = MlflowClient(resolve_uri(tracking_uri))
    found = experiment_named(client, experiment)
    runs = client.search_runs([found.experiment_id],
                              "tags.`hpsearch.role` = 'study' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=20)
    for run in runs:
        if any(a.path == "model" for a in client.list_artifacts(run.info.run_id)):
            return client, run
    raise TrackingError(f"experiment {experiment!r} has no finished study with a best model at "
                        f"{mask_credentials(client.tracking_uri)}")


def load_best(name: str, tracking_uri: str | None = None) -> Any:
    """The refit best model of a study, ready to ``predict``: ``name`` is an experiment (its newest
    finished study) or a registered model (``<study>-best``, alias ``champion``).

    That is whatever the search fitted: the whole pipeline when a pipeline was searched.
    """
    uri = resolve_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    if client.get_experiment_by_name(name) is None and client.search_registered_models(f"name = '{name}'"):
        return mlflow.sklearn.load_model(f"models:/{name}@champion")
    _, run = latest_study_run(name, uri)
    return mlflow.sklearn.load_model(f"runs:/{run.info.run_id}/model")


def collect(client: MlflowClient, experiment_name: str, study_run_id: str | None = None) -> StudyRecord:
    """The newest study run of ``experiment_name`` (or ``study_run_id``) and its trial runs, as plain data."""
    where = mask_credentials(client.tracking_uri)
    try:
        experiment = experiment_named(client, experiment_name)
        if study_run_id is None:
            newest = client.search_runs([experiment.experiment_id], "tags.`hpsearch.role` = 'study'",
                                        order_by=["attributes.start_time DESC"], max_results=1)
            if not newest:
                raise TrackingError(f"experiment {experiment_name!r} has no hpsearch study run at {where}")
            study_run_id = newest[0].info.run_id
        study = client.get_run(study_run_id)
        runs, token = [], None
        while token != "":
            page = client.search_runs([study.info.experiment_id], f"tags.`mlflow.parentRunId` = '{study_run_id}'",
                                      max_results=1000, page_token=token)
            runs, token = runs + list(page), page.token or ""
        cv = any("fold0/loss" in run.data.metrics for run in runs)
        trials = [_trial_record(client, run, "fold0/" if cv else "") for run in runs]
    except MlflowException as exc:
        raise TrackingError(f"cannot read MLflow at {where}: {exc.message}") from None
    return StudyRecord(experiment_name, study_run_id, study.data.tags.get("hpsearch.study", study.info.run_name),
                       study.data.params.get("scoring", "score"), cv, sorted(trials, key=lambda t: t.number))


def _trial_record(client: MlflowClient, run: Any, prefix: str) -> TrialRecord:
    curves = {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, prefix + key))
              for key in ("loss", "val_loss")}
    state = run.data.tags.get("hpsearch.state", "failed")
    return TrialRecord(int(run.data.tags.get("hpsearch.trial", -1)), state,
                       {k: parse_param(v) for k, v in run.data.params.items()},
                       run.data.metrics.get("score") if state == "finished" else None, curves)


def read_study(experiment: str, tracking_uri: str | None = None) -> StudyRecord:
    """The newest study of ``experiment`` (what ``hpsearch report`` draws); a missing local store is an error."""
    uri = resolve_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise TrackingError(f"no MLflow store at {uri} (run a study first, or give the tracking URI it used)")
    return collect(MlflowClient(uri), experiment)


class TrackingUnavailable(Exception):
    """The tracking server kept failing for the whole retry budget (hpsearch goes on without it)."""


def _transient(exc: Exception) -> bool:
    """A failure worth retrying: the server is down, restarting, overloaded or slow."""
    if isinstance(exc, MlflowException):
        return exc.error_code in _TRANSIENT_CODES
    import requests

    return isinstance(exc, (requests.RequestException, ConnectionError, TimeoutError))


class _Retry:
    """Retries transient tracking failures with exponential backoff, for at most ``seconds`` per operation.

    After one operation gave up, the next ones try once each (no waiting) until one succeeds: a server
    that is gone costs the study one retry budget, not one per call.
    """

    def __init__(self, uri: str, seconds: float) -> None:
        self.uri, self.seconds = mask_credentials(uri), seconds
        self.healthy, self._down_since = True, None

    def __call__(self, what: str, operation: Callable[[], Any], wait: bool = True) -> Any:
        deadline = time.monotonic() + (self.seconds if wait and self.healthy else 0.0)
        delay = 1.0
        while True:
            try:
                value = operation()
            except Exception as exc:
                if not _transient(exc):
                    raise
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    _log.warning("hpsearch: MLflow at %s does not answer (%s); retrying for up to %g s",
                                 self.uri, _short(exc), self.seconds)
                if time.monotonic() + delay > deadline:
                    self.healthy = False
                    raise TrackingUnavailable(f"{what}: {_short(exc)}") from None
                time.sleep(delay)
                delay = min(2 * delay, _MAX_DELAY)
                continue
            if self._down_since is not None:
                _log.warning("hpsearch: MLflow at %s answers again (after %.0f s)", self.uri,
                             time.monotonic() - self._down_since)
            self.healthy, self._down_since = True, None
            return value


def _short(exc: Exception) -> str:
    """``NewConnectionError on /api/2.0/mlflow/runs/log-batch`` rather than urllib3's paragraph."""
    text = exc.message if isinstance(exc, MlflowException) else str(exc)
    cause, endpoint = re.search(r"Caused by (\w+)", text), re.search(r"(/api/[\w./-]+)", text)
    if cause:
        return f"{cause.group(1)} on {endpoint.group(1)}" if endpoint else cause.group(1)
    return mask_credentials_in_text(text.splitlines()[0] if text else type(exc).__name__)[:300]


class _Run:
    """One MLflow run: params, tags and metrics are buffered and sent in batches; a failed send keeps them.

    ``run_id`` is None until the run exists on the server (``create`` makes it on the first send and returns its
    :class:`~mlflow.entities.RunInfo`). With ``background`` (a queue onto the tracker's upload thread), curves are
    sent there while training goes on.
    """

    def __init__(self, client: MlflowClient, run_id: str | None, retry: _Retry, name: str = "run",
                 create: Callable[[], RunInfo] | None = None,
                 background: Callable[[Callable[[], None]], None] | None = None) -> None:
        self.client, self.run_id, self.name = client, run_id, name
        self.artifact_uri: str | None = None  # known for the runs this process created
        self._retry, self._create, self._background = retry, create, background
        self._lock = threading.Lock()  # the buffers: filled by the training thread, emptied by the upload thread
        self._params: list[Param] = []
        self._tags: dict[str, str] = {}
        self._metrics: list[Metric] = []
        self._pickled: _Pickled | None = None  # a model to save (see :meth:`stage_model`)
        self._staged: tempfile.TemporaryDirectory | None = None  # a saved model to upload
        self._status: str | None = None
        self.opened: Future | None = None  # the upload thread's task that creates the run (trial runs)
        self._backoff = _FLUSH_SECONDS
        self._next_flush = time.monotonic() + _FLUSH_SECONDS

    @property
    def pending(self) -> bool:
        """Something is still to be sent (the server was unreachable)."""
        return bool(self.run_id is None or self._params or self._tags or self._metrics
                    or self._pickled is not None or self._staged is not None or self._status)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Buffer values; during training a send is tried once, and on failure again later, backing off."""
        now = int(time.time() * 1000)
        with self._lock:
            self._metrics.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
            full = len(self._metrics) >= _MAX_BATCH and self._backoff == _FLUSH_SECONDS
        sending = self._next_flush == math.inf
        if not sending and (time.monotonic() >= self._next_flush or full):
            self._next_flush = math.inf  # until this send is done
            if self._background is None:
                self.send_once()
            else:
                self._background(self.send_once)

    def send_once(self) -> None:
        """Try one send of what is buffered; on failure, back off (the values stay for the next send)."""
        try:
            self._retry(f"the record of {self.name}", self._send, wait=False)
            self._backoff = _FLUSH_SECONDS
        except TrackingUnavailable:
            self._backoff = min(2 * self._backoff, _MAX_FLUSH_BACKOFF)
        except MlflowException as exc:  # refused (say, the run was deleted): the run's end reports it
            _log.warning("hpsearch: MLflow refused the record of %s: %s", self.name, _short(exc))
            self._backoff = _MAX_FLUSH_BACKOFF
        self._next_flush = time.monotonic() + self._backoff

    def log_params(self, params: dict[str, Any], now: bool = True) -> None:
        """Buffer params and, with ``now``, send them (retried with backoff)."""
        with self._lock:
            self._params.extend(Param(k, _param_value(v)) for k, v in params.items())
        if now:
            self.flush()

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Buffer tags: they go with the next send (never raises)."""
        with self._lock:
            self._tags.update({k: str(v)[:5000] for k, v in tags.items()})

    def flush(self, wait: bool = True) -> None:
        """Send everything buffered (retried with backoff)."""
        self._retry(f"the record of {self.name}", self._send, wait=wait)

    def _send(self) -> None:
        """Send the buffers, oldest first, params, tags and metrics together (MLflow's batch limits apply); what
        was buffered meanwhile stays for the next send."""
        if self.run_id is None:
            info = self._create()
            self.run_id, self.artifact_uri = info.run_id, info.artifact_uri
        while True:
            with self._lock:
                params, tags = self._params[:_MAX_BATCH_PARAMS], dict(list(self._tags.items())[:_MAX_BATCH_TAGS])
                metrics = self._metrics[:_MAX_BATCH - len(params) - len(tags)]
            if not (params or tags or metrics):
                return
            self.client.log_batch(self.run_id, metrics=metrics, params=params,
                                  tags=[RunTag(k, v) for k, v in tags.items()])
            with self._lock:
                del self._params[:len(params)]
                del self._metrics[:len(metrics)]
                for key, value in tags.items():
                    if self._tags.get(key) == value:
                        del self._tags[key]

    def log_artifacts(self, folder: Path, path: str | None = None) -> None:
        """Upload the files in ``folder`` under ``path``: straight to the run's artifact store when this process
        created the run (``MlflowClient.log_artifacts`` first asks the server where that is, once per run)."""
        if self.artifact_uri is None:
            self.client.log_artifacts(self.run_id, str(folder), path)
        else:
            get_artifact_repository(self.artifact_uri, tracking_uri=self.client.tracking_uri).log_artifacts(
                str(folder), path)

    def stage_model(self, estimator: Any) -> None:
        """Pickle a fitted estimator now, on the thread that fitted it (pickling touches Keras, which that thread
        is about to use again); :meth:`finish`, wherever it runs, saves it as an MLflow model and uploads it."""
        self._pickled = _Pickled(estimator)

    def finish(self, model: Any = None, status: str | None = None, wait: bool = True) -> None:
        """Send what is pending, then the model (``model/``) and the final status; a step done is not redone."""
        if model is not None:
            self.stage_model(model)
        if self._pickled is not None:  # on disk before anything can fail: a run the server missed keeps no bytes
            self._staged = tempfile.TemporaryDirectory(prefix="hpsearch-model-")
            _save_model(self._pickled, Path(self._staged.name) / "model")
            self._pickled = None
        self._status = status or self._status
        self.flush(wait)
        if self._staged is not None:
            target = Path(self._staged.name) / "model"
            self._retry(f"the model of {self.name}", lambda: self.log_artifacts(target, "model"), wait=wait)
            self._staged.cleanup()
            self._staged = None
        if self._status:
            self._retry(f"closing {self.name}",
                        lambda: self.client.set_terminated(self.run_id, status=self._status), wait=wait)
            self._status = None


def retry_budget() -> float:
    """The retry budget of one tracking operation: ``$HPSEARCH_TRACKING_RETRY_SECONDS``, else 120 s."""
    text = os.environ.get(RETRY_SECONDS_VAR, "").strip()
    if not text:
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < math.inf:
        raise ConfigError(f"{RETRY_SECONDS_VAR}={text!r}: expected a number of seconds >= 0")
    return value


class _Pickled:
    """A fitted estimator pickled as MLflow pickles it (cloudpickle): saved as an MLflow model, its bytes are the
    model file, and loading that model gives the estimator. MLflow's part of a save (requirement checks, YAML
    files, ~7 ms) can then run on the upload thread, while only the pickling (~5 ms) stays on the training thread.
    """

    def __init__(self, estimator: Any) -> None:
        self.data = cloudpickle.dumps(estimator)
        if hasattr(estimator, "predict"):
            self.predict = None  # what MLflow looks for before it adds the python_function flavour

    def __reduce__(self) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
        return pickle.loads, (self.data,)


def _save_model(estimator: Any, target: Path) -> None:
    mlflow.sklearn.save_model(estimator, str(target), serialization_format="cloudpickle",
                              pip_requirements=_pip_requirements())


def _child_env() -> dict[str, str]:
    """This process' environment, with this hpsearch first on the path when it runs from a checkout that may not
    be installed (an installed one is found anyway; site-packages ahead of the standard library could shadow it)."""
    env, root = dict(os.environ), Path(__file__).resolve().parents[1]
    if not {"site-packages", "dist-packages"} & set(root.parts):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return env


def _warm_model_saving() -> None:
    """Save a throwaway model once: MLflow's first save in a process maps every installed package to its modules
    to check the requirements (~0.5 s), which is better paid on the upload thread, while the first trial trains,
    than on the training thread when the refit best model is saved (trial models are saved on the upload thread)."""
    from sklearn.dummy import DummyRegressor

    # only a head start: whatever goes wrong here goes wrong again, and is reported, where a trial's model is saved
    with contextlib.suppress(Exception), tempfile.TemporaryDirectory(prefix="hpsearch-warm-") as folder:
        _save_model(DummyRegressor().fit([[0.0]], [0.0]), Path(folder) / "model")


def _draw_report(process: subprocess.Popen, request: str) -> str | None:
    """Send the report process its one request and wait for it to exit: None, or why it failed."""
    try:
        _, errors = process.communicate(request + "\n", timeout=_REPORT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return f"no report after {_REPORT_SECONDS:g} s"
    if process.returncode == 0:
        return None
    return errors.strip().splitlines()[-1] if errors.strip() else f"exit code {process.returncode}"


class MlflowTracker:
    """Records a study in MLflow: one study run, one child run per trial.

    Transient server failures are retried with backoff (``retry_seconds`` per operation); what still
    fails is kept and sent later in the study, and what never reached the server is reported at the end.
    """

    def __init__(self, tracking_uri: str, experiment: str, log_models: bool = True,
                 retry_seconds: float | None = None) -> None:
        self.tracking_uri, self.experiment_name, self.log_models = tracking_uri, experiment, log_models
        self._client: MlflowClient | None = None
        self.experiment_id: str | None = None
        self.study: _Run | None = None
        self._open_trial: _Run | None = None
        self._retry = _Retry(tracking_uri, retry_budget() if retry_seconds is None else retry_seconds)
        self._unsent: list[_Run] = []
        self._tried: set[int] = set()
        self._uploads: ThreadPoolExecutor | None = None
        self._uploading: list[Future] = []

    @property
    def client(self) -> MlflowClient:
        """The MLflow client, created on first use (creating it may create the local SQLite store)."""
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def check_reachable(self) -> None:
        """Fail fast, before any training, when the tracking server does not answer."""
        if urlsplit(self.tracking_uri).scheme not in ("http", "https"):
            return
        import requests

        url = self.tracking_uri.rstrip("/") + "/health"
        try:
            requests.get(url, timeout=5).raise_for_status()
        except requests.RequestException as exc:
            raise TrackingError(
                f"the MLflow tracking server at {mask_credentials(self.tracking_uri)} does not answer "
                f"({type(exc).__name__}); start it, record offline with `hpsearch run --offline` and copy the "
                "study later with `hpsearch sync`, or unset tracking.uri / MLFLOW_TRACKING_URI to record "
                "locally in ./mlflow.db"
            ) from None

    def ensure_experiment(self) -> str:
        """The id of the experiment (created, or restored when deleted)."""
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        location = None
        if urlsplit(self.tracking_uri).scheme in ("sqlite", "", "file"):
            location = (Path.cwd() / "mlartifacts").as_uri()
        return self.client.create_experiment(self.experiment_name, artifact_location=location)

    def _unavailable(self, exc: Exception) -> TrackingError:
        detail = exc.message if isinstance(exc, MlflowException) else str(exc)
        return TrackingError(f"cannot use MLflow at {mask_credentials(self.tracking_uri)}: {detail}")

    def start_study(self, name: str, params: dict[str, Any], study_text: str, resume: bool,
                    run_id: str | None = None) -> str:
        """Create (or, when ``resume``, reopen ``run_id`` or the newest) study run; returns its run id."""
        try:
            run_id = self._start_study(name, params, study_text, resume, run_id)
        except (MlflowException, TrackingUnavailable) as exc:
            raise self._unavailable(exc) from None
        self._in_background(_warm_model_saving)
        return run_id

    def _start_study(self, name: str, params: dict[str, Any], study_text: str, resume: bool,
                     run_id: str | None) -> str:
        self.experiment_id = self._retry("the experiment", self.ensure_experiment)
        previous = self._retry("finding the study run", lambda: self.client.search_runs(
            [self.experiment_id], f"tags.`hpsearch.study` = '{name}' and tags.`hpsearch.role` = 'study'",
            order_by=["attributes.start_time DESC"], max_results=1)) if resume and not run_id else []
        if resume and (run_id or previous):
            self.study = _Run(self.client, run_id or previous[0].info.run_id, self._retry, "the study run")
            try:
                self._retry("reopening the study run", lambda: self.client.update_run(self.study.run_id,
                                                                                      status="RUNNING"))
            except MlflowException as exc:
                if run_id is None or exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                raise TrackingError(
                    f"the study {name!r} resumes from its search storage, which names MLflow run {run_id}, but "
                    f"MLflow at {mask_credentials(self.tracking_uri)} has no such run (was its store deleted or "
                    "moved?): point tracking.uri at the store the study was recorded in, or start the study afresh "
                    "under a new name or with a new search.storage") from None
            return self.study.run_id
        self.study = _Run(self.client, None, self._retry, "the study run", create=lambda: self.client.create_run(
            self.experiment_id, run_name=name, tags={"hpsearch.study": name, "hpsearch.role": "study"}).info)
        self.study.log_params(params)
        self.study.set_tags({f"version.{k}": v for k, v in package_versions().items()})
        self.study.flush()
        with tempfile.TemporaryDirectory(prefix="hpsearch-study-") as folder:
            (Path(folder) / "study.yaml").write_text(mask_credentials_in_text(study_text), encoding="utf-8")
            self._retry("the study file", lambda: self.study.log_artifacts(Path(folder)))
        return self.study.run_id

    def _create_trial(self, number: int) -> RunInfo:
        study = self.study.run_id
        if number in self._tried:  # an earlier try may have reached the server before failing: reuse its run
            found = self.client.search_runs(
                [self.experiment_id], f"tags.`mlflow.parentRunId` = '{study}' and tags.`hpsearch.trial` = '{number}' "
                "and attributes.status = 'RUNNING'", max_results=1)
            if found:
                self._tried.discard(number)
                return found[0].info
        self._tried.add(number)
        info = self._new_trial_run(number, {"hpsearch.state": "running",
                                            "hpsearch.process": f"{socket.gethostname()}:{os.getpid()}"})
        self._tried.discard(number)
        return info

    def _new_trial_run(self, number: int, tags: dict[str, str]) -> RunInfo:
        """A child run ``trial-NNN`` of the study run."""
        return self.client.create_run(self.experiment_id, run_name=f"trial-{number:03d}", tags={
            "mlflow.parentRunId": self.study.run_id, "hpsearch.role": "trial", "hpsearch.trial": str(number), **tags}).info

    def start_trial(self, number: int, params: dict[str, Any]) -> _Run:
        """Open the child run of one trial with its sampled params on the upload thread, while the trial trains
        (what MLflow refuses or misses stays buffered and goes with the trial's curves or its end)."""
        trial = self._open_trial = _Run(self.client, None, self._retry, f"trial {number}",
                                        create=lambda: self._create_trial(number), background=self._in_background)
        trial.log_params(params, now=False)
        trial.opened = self._in_background(trial.send_once)
        return trial

    def end_trial(self, run: _Run, result: TrialResult, model: Any = None) -> None:
        """Final scores, state and (if any) the trained model; closes the child run. Sets ``result.run_id``."""
        metrics = {"duration_s": result.duration_s}
        if result.fold_epochs:
            metrics["epochs"] = max(result.fold_epochs)
        if result.state == "finished":
            metrics.update(score=result.score, score_std=result.score_std)
            if len(result.fold_scores) > 1:
                metrics.update({f"fold{k}/score": s for k, s in enumerate(result.fold_scores)})
        run.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
        tags = {"hpsearch.state": result.state}
        if result.reason:
            tags["hpsearch.reason"] = result.reason
        run.set_tags(tags)
        if model is not None and self.log_models and result.state == "finished":
            run.stage_model(model)  # here, on the training thread: the rest is done on the upload thread
        self._in_background(lambda: self._finish_trial(run, STATUS[result.state]))
        self._open_trial = None
        if run.opened is not None:
            futures_wait([run.opened])  # long done, unless the server is slow: then the id is worth the wait
        result.run_id = run.run_id

    def trial_model(self, run_id: str) -> Any:
        """The model logged with trial run ``run_id`` (trained in another process or an earlier run); None when it
        has none (``tracking.log_models: false``, a model never uploaded) or the server does not answer."""
        try:
            with tempfile.TemporaryDirectory() as folder:
                local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model", dst_path=folder,
                                                            tracking_uri=self.tracking_uri)
                return mlflow.sklearn.load_model(local)
        except Exception as exc:  # noqa: BLE001  (any failure means: this trial's model is not available)
            _log.info("hpsearch: the model of trial run %s could not be loaded (%s)", run_id, exc)
            return None

    def _finish_trial(self, run: _Run, status: str) -> None:
        """Upload a trial's model and close its run, behind the next trial's training (one thread, in order)."""
        self._send_unsent(wait=False)
        try:
            run.finish(status=status)
        except TrackingUnavailable as exc:
            self._unsent.append(run)
            _log.warning("hpsearch: %s is not completely in MLflow yet (%s); hpsearch tries again during the study",
                         run.name, exc)

    def start_report(self) -> None:
        """Draw the study's report (``report/`` on the study run) behind the refit, once every trial is uploaded.

        It is drawn in a child process (:func:`hpsearch.report.report_process_main`), which starts now so that its
        imports overlap the refit: Keras' training loop holds the GIL most of the time, so plotting on a thread
        of this process slowed the refit by about as long as the plotting took. The child runs at a lower CPU
        priority and only draws: this process reads the study back from MLflow and attaches the plots, so the
        child never loads MLflow (a second or two of CPU taken from the refit on a machine it keeps busy).
        """
        process = subprocess.Popen([sys.executable, "-c", _REPORT_PROCESS], stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_child_env())
        self._in_background(lambda: self._log_report(process))

    def _log_report(self, process: subprocess.Popen) -> None:
        """Hand the study to the report process, wait for its plots and attach them; a report that fails never
        fails the study (it is recorded already): it is a warning."""
        with tempfile.TemporaryDirectory(prefix="hpsearch-report-") as folder:
            try:
                record = self._retry("reading the study back", lambda: collect(
                    self.client, self.experiment_name, self.study.run_id))
                request = {"folder": folder, "record": record.to_dict(), "importances": param_importances(record)}
            except Exception as exc:
                process.communicate("")  # EOF: the report process exits
                _log.warning("hpsearch: the study report was not logged: %s: %s", type(exc).__name__, _short(exc))
                return
            failure = _draw_report(process, json.dumps(request))
            if failure is None:
                try:
                    self._retry("the study report", lambda: self.study.log_artifacts(Path(folder), "report"))
                except (TrackingUnavailable, MlflowException) as exc:
                    failure = _short(exc)
            if failure is not None:
                _log.warning("hpsearch: the study report was not logged: %s", failure)

    def _in_background(self, task: Callable[[], None]) -> Future:
        """Queue ``task`` on the tracker's upload thread (one thread: tasks run in the order queued)."""
        if self._uploads is None:
            self._uploads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpsearch-mlflow")
        self._uploading = [f for f in self._uploading if not f.done() or f.exception() is not None]
        self._uploading.append(self._uploads.submit(task))
        return self._uploading[-1]

    def wait(self) -> None:
        """Wait until every ended trial is uploaded (or kept for a later try) and the report is drawn."""
        while self._uploading:
            self._uploading.pop(0).result()

    def _stop_uploads(self) -> None:
        """End the upload thread (a later upload starts another)."""
        self.wait()
        if self._uploads is not None:
            self._uploads.shutdown()
            self._uploads = None

    def _send_unsent(self, wait: bool) -> None:
        """Finish the trial records the server missed, oldest first; stop at the first that still fails."""
        while self._unsent:
            try:
                self._unsent[0].finish(wait=wait)
            except TrackingUnavailable:
                return
            self._unsent.pop(0)

    def end_study(self, result: StudyResult, extra: dict[str, Any], status: str = "FINISHED") -> None:
        """Best params/score, test score and the refit best model on the study run; closes it.

        When the server stays gone, what it missed is listed in a warning and the refit best model
        is saved under ``./hpsearch-unsent/`` so the study's outcome is not lost.
        """
        self.wait()
        self._send_unsent(wait=True)
        best = result.best
        study = self.study
        counts = {"trials": len(result.trials)}
        for state in ("finished", "pruned", "failed"):
            counts[f"trials_{state}"] = sum(t.state == state for t in result.trials)
        study.log_metrics(counts)
        if best is not None:
            study.log_metrics({"best_score": best.score, "best_score_std": best.score_std})
            study.set_tags({"hpsearch.best_trial": best.number, "hpsearch.best_run_id": best.run_id or "",
                            "hpsearch.best_params": json.dumps(best.params, default=str)})
        if result.test_score is not None:
            study.log_metrics({"test_score": result.test_score})
        if result.final_valid_score is not None:
            study.log_metrics({"final_valid_score": result.final_valid_score})
        if extra:
            study.set_tags({f"hpsearch.{k}": v for k, v in extra.items()})
        try:
            if result.best_estimator is not None:
                study.finish(result.best_estimator)
                self._retry("registering the best model", lambda: self._register(registry_name(result.name),
                                                                                  study.run_id))
            study.finish(status=status)
        except TrackingUnavailable:
            self._report_unsent(result)
        self._stop_uploads()

    def _report_unsent(self, result: StudyResult) -> None:
        """Say what never reached the server; keep the refit best model here."""
        self._send_unsent(wait=False)
        missed = [run.name for run in self._unsent] + ["the study run's results"]
        saved = ""
        if result.best_estimator is not None and self.study.pending:
            folder = Path.cwd() / "hpsearch-unsent" / f"{result.name}-{time.strftime('%Y%m%d-%H%M%S')}" / "model"
            _save_model(result.best_estimator, folder)
            saved = f"; the refit best model is saved in {folder}"
        _log.warning("hpsearch: MLflow at %s stopped answering; not recorded there: %s. The scores printed below "
                     "are complete%s", mask_credentials(self.tracking_uri), ", ".join(missed), saved)

    def _register(self, name: str, run_id: str) -> None:
        """A new version of ``name`` from the study run's model, with the alias ``champion``."""
        try:
            self.client.create_registered_model(name, tags={"hpsearch.role": "best"})
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = self.client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id)
        self.client.set_registered_model_alias(name, "champion", version.version)

    def close_killed_trials(self, numbers: list[int]) -> None:
        """Trial runs left RUNNING by a killed worker end as KILLED, with the reason."""
        if not numbers:
            return
        try:
            self._close_killed_trials(numbers)
        except TrackingUnavailable as exc:
            raise self._unavailable(exc) from None

    def _close_killed_trials(self, numbers: list[int]) -> None:
        """A killed trial's run that is still RUNNING ends as KILLED; one that never reached MLflow (the worker died
        before its upload thread created it) is created as KILLED, so the study shows every trial it ran."""
        tags = {"hpsearch.state": "failed", "hpsearch.reason": "killed: its worker stopped sending heartbeats"}
        for number in numbers:
            found = self._retry("finding killed trials", lambda number=number: self.client.search_runs(
                [self.experiment_id], f"tags.`mlflow.parentRunId` = '{self.study.run_id}' and "
                f"tags.`hpsearch.trial` = '{number}'", max_results=1))
            if found and found[0].info.status != "RUNNING":
                continue  # closed by an earlier resume
            killed = _Run(self.client, found[0].info.run_id if found else None, self._retry, f"trial {number}",
                          create=lambda number=number: self._new_trial_run(number, tags))
            killed.set_tags(tags)
            killed.finish(status="KILLED")

    def log_range_test(self, study_name: str, test: Any, plot_path: Path) -> str:
        """One run (tag ``hpsearch.role=lr-find``): the loss and LR per step, the findings, the plot."""
        try:
            return self._log_range_test(study_name, test, plot_path)
        except TrackingUnavailable as exc:
            raise self._unavailable(exc) from None

    def _log_range_test(self, study_name: str, test: Any, plot_path: Path) -> str:
        experiment_id = self._retry("the experiment", self.ensure_experiment)
        suffix = f"-{test.optimizer}" if test.optimizer else ""
        run = _Run(self.client, None, self._retry, f"lr-find{suffix}", create=lambda: self.client.create_run(
            experiment_id, run_name=f"lr-find{suffix}",
            tags={"hpsearch.role": "lr-find", "hpsearch.study": study_name}).info)
        run.log_params({"optimizer": test.optimizer, "start_lr": float(test.lrs[0]) if len(test.lrs) else None,
                        "iterations": len(test.lrs)})
        for step, (lr, loss) in enumerate(zip(test.lrs, test.losses)):
            values = {"lr": lr, "loss": loss}
            if step < len(test.smoothed):
                values["loss_smoothed"] = test.smoothed[step]
            run.log_metrics({k: v for k, v in values.items() if math.isfinite(v)}, step=step)
        findings = {k: getattr(test, k) for k in ("divergence_lr", "suggested_lr", "steepest_lr")}
        run.log_metrics({k: v for k, v in findings.items() if v is not None})
        if test.problems:
            run.set_tags({"hpsearch.problems": " | ".join(test.problems)})
        run.flush()
        self._retry("the range-test plot", lambda: self.client.log_artifact(run.run_id, str(plot_path)))
        run.finish(status="FINISHED")
        return run.run_id

    def abort(self, reason: str, status: str = "KILLED") -> None:
        """Close the open trial run and the study run (KILLED or FAILED) so nothing is left RUNNING."""
        self._stop_uploads()
        for run in (self._open_trial, self.study):
            if run is not None:
                run.set_tags({"hpsearch.state": "failed", "hpsearch.reason": reason})
                try:
                    run.finish(status=status, wait=False)
                except TrackingUnavailable:
                    _log.warning("hpsearch: %s could not be closed in MLflow (the server does not answer)", run.name)
