"""One MLflow run as hpsearch writes it: params, tags and metrics buffered and sent in batches, on the
tracker's upload thread while training goes on; what a failed send missed is kept for the next try."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import pickle
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import cloudpickle
import mlflow
import mlflow.sklearn
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunInfo, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from hpsearch.errors import TrackingUnavailable
from hpsearch.tracking._retry import Retry, short_error, transient

_log = logging.getLogger(__name__)

PACKAGES = ("hpsearch", "tensorflow", "keras", "scikeras", "scikit-learn", "optuna", "mlflow", "numpy", "scipy")
# Every request costs the server ~3-10 ms of CPU, taken from training when both share the machine.
_FLUSH_SECONDS = 5.0
_MAX_FLUSH_BACKOFF = 60.0  # a failed curve upload is tried again after 10, 20, ... at most 60 s
_MAX_BATCH, _MAX_BATCH_PARAMS, _MAX_BATCH_TAGS = 1000, 100, 100  # MLflow's log_batch limits


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


class BufferedRun:
    """One MLflow run: params, tags and metrics are buffered and sent in batches; a failed send keeps them.

    ``run_id`` is None until the run exists on the server (``create`` makes it on the first send and returns its
    :class:`~mlflow.entities.RunInfo`). With ``background`` (a queue onto the tracker's upload thread), curves are
    sent there while training goes on.
    """

    def __init__(self, client: MlflowClient, run_id: str | None, retry: Retry, name: str = "run",
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
        self.model_lost: str | None = None  # why the staged model could not be saved (a full disk)
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
            _log.warning("hpsearch: MLflow refused the record of %s: %s", self.name, short_error(exc))
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
            save_model(self._pickled, Path(self._staged.name) / "model")
            self._pickled = None
        self._status = status or self._status
        self.flush(wait)
        if self._staged is not None:
            target = Path(self._staged.name) / "model"
            try:
                self._retry(f"the model of {self.name}", lambda: self.log_artifacts(target, "model"), wait=wait)
            except OSError as exc:  # the artifact store's disk is full (or read-only): the record goes on without it
                self._model_not_saved(exc)
                self.flush(wait)
            self._staged.cleanup()
            self._staged = None
        if self._status:
            self._retry(f"closing {self.name}",
                        lambda: self.client.set_terminated(self.run_id, status=self._status), wait=wait)
            self._status = None


    def _model_not_saved(self, exc: OSError) -> None:
        """Say so (a warning, the run's ``hpsearch.model`` tag) and remove what a partial upload left."""
        reason = exc.strerror or type(exc).__name__
        _log.warning("hpsearch: the model of %s was not saved: %s (%s); the study goes on without it", self.name,
                     reason, getattr(exc, "filename", None) or self.artifact_uri)
        self.model_lost = reason
        self.set_tags({"hpsearch.model": f"not saved: {reason}"})
        try:
            get_artifact_repository(self.artifact_uri or self.client.get_run(self.run_id).info.artifact_uri
                                    ).delete_artifacts("model")
        except Exception as cleanup:  # noqa: BLE001  (best effort: a store that cannot delete keeps the part)
            _log.info("hpsearch: the partial model of %s stays: %s", self.name, cleanup)


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


def save_model(estimator: Any, target: Path) -> None:
    mlflow.sklearn.save_model(estimator, str(target), serialization_format="cloudpickle",
                              pip_requirements=_pip_requirements())


def warm_model_saving() -> None:
    """Save a throwaway model once: MLflow's first save in a process maps every installed package to its modules
    to check the requirements (~0.5 s), which is better paid on the upload thread, while the first trial trains,
    than on the training thread when the refit best model is saved (trial models are saved on the upload thread)."""
    from sklearn.dummy import DummyRegressor

    # only a head start: whatever goes wrong here goes wrong again, and is reported, where a trial's model is saved
    with contextlib.suppress(Exception), tempfile.TemporaryDirectory(prefix="hpsearch-warm-") as folder:
        save_model(DummyRegressor().fit([[0.0]], [0.0]), Path(folder) / "model")


def log_table(client: MlflowClient, run_id: str, table: dict[str, list[Any]], name: str = "trials.json") -> None:
    """``table`` as the run's MLflow table ``name``; a store that takes no tables gets a warning, not a failure."""
    try:
        client.log_table(run_id, table, name)
    except MlflowException as exc:
        if transient(exc):
            raise
        _log.warning("hpsearch: the table %s was not recorded (%s)", name, short_error(exc))
