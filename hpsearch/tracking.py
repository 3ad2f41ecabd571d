"""MLflow tracking (the only module that imports mlflow).

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
Metrics go out in batches (``log_batch``), at most one call every couple of seconds per trial.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
import mlflow.sklearn
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from hpsearch.config import tracking_uri as resolve_uri
from hpsearch.errors import TrackingError, mask_credentials, mask_credentials_in_text
from hpsearch.results import StudyResult, TrialResult

PACKAGES = ("hpsearch", "tensorflow", "keras", "scikeras", "scikit-learn", "optuna", "mlflow", "numpy", "scipy")
_FLUSH_SECONDS = 2.0
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# MLflow's chatter (schema migrations, the pickle-format caution we chose knowingly) is not the user's concern.
for _name, _level in (("mlflow", logging.WARNING), ("mlflow.sklearn", logging.ERROR), ("alembic", logging.WARNING)):
    logging.getLogger(_name).setLevel(_level)
_MAX_BATCH = 1000
STATUS = {"finished": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a study's results depend on."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _pip_requirements() -> list[str]:
    versions = package_versions()
    return [f"{name}=={versions[name]}" for name in ("tensorflow", "keras", "scikeras", "scikit-learn") if name in versions]


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]


def registry_name(study_name: str) -> str:
    """The registered-model name of a study's best model (alias ``champion``)."""
    return f"{study_name}-best"


def latest_study_run(experiment: str, tracking_uri: str | None = None) -> tuple[MlflowClient, Any]:
    """(client, the newest finished study run with a best model) of ``experiment``."""
    uri = resolve_uri(tracking_uri)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise TrackingError(f"no MLflow experiment named {experiment!r} at {mask_credentials(uri)}")
    runs = client.search_runs([found.experiment_id], "tags.`hpsearch.role` = 'study' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=20)
    for run in runs:
        if any(a.path == "model" for a in client.list_artifacts(run.info.run_id)):
            return client, run
    raise TrackingError(f"experiment {experiment!r} has no finished study with a best model at {mask_credentials(uri)}")


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


class _Run:
    """One MLflow run with a metric buffer flushed in batches."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id
        self._metrics: list[Metric] = []
        self._last_flush = time.monotonic()

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self._metrics.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if time.monotonic() - self._last_flush > _FLUSH_SECONDS or len(self._metrics) >= _MAX_BATCH:
            self.flush()

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def flush(self) -> None:
        while self._metrics:
            batch, self._metrics = self._metrics[:_MAX_BATCH], self._metrics[_MAX_BATCH:]
            self.client.log_batch(self.run_id, metrics=batch)
        self._last_flush = time.monotonic()

    def log_model(self, estimator: Any, path: str = "model") -> None:
        """Save a fitted scikit-learn estimator as an MLflow model under ``path``."""
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / path
            mlflow.sklearn.save_model(estimator, str(target), serialization_format="cloudpickle",
                                      pip_requirements=_pip_requirements())
            self.client.log_artifacts(self.run_id, str(target), path)

    def end(self, status: str) -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)


class MlflowTracker:
    """Records a study in MLflow: one study run, one child run per trial."""

    def __init__(self, tracking_uri: str, experiment: str, log_models: bool = True) -> None:
        self.tracking_uri, self.experiment_name, self.log_models = tracking_uri, experiment, log_models
        self._client: MlflowClient | None = None
        self.experiment_id: str | None = None
        self.study: _Run | None = None
        self._open_trial: _Run | None = None

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
                f"({type(exc).__name__}); start it, or unset tracking.uri / MLFLOW_TRACKING_URI to record "
                "locally in ./mlflow.db"
            ) from None

    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        location = None
        if urlsplit(self.tracking_uri).scheme in ("sqlite", "", "file"):
            location = (Path.cwd() / "mlartifacts").as_uri()
        return self.client.create_experiment(self.experiment_name, artifact_location=location)

    def start_study(self, name: str, params: dict[str, Any], study_text: str, resume: bool,
                    run_id: str | None = None) -> str:
        """Create (or, when ``resume``, reopen ``run_id`` or the newest) study run; returns its run id."""
        try:
            self.experiment_id = self._experiment()
        except MlflowException as exc:
            raise TrackingError(f"cannot use MLflow at {mask_credentials(self.tracking_uri)}: {exc.message}") from None
        previous = self.client.search_runs(
            [self.experiment_id], f"tags.`hpsearch.study` = '{name}' and tags.`hpsearch.role` = 'study'",
            order_by=["attributes.start_time DESC"], max_results=1) if resume and not run_id else []
        if resume and (run_id or previous):
            self.study = _Run(self.client, run_id or previous[0].info.run_id)
            self.client.update_run(self.study.run_id, status="RUNNING")
            return self.study.run_id
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={"hpsearch.study": name, "hpsearch.role": "study"})
        self.study = _Run(self.client, run.info.run_id)
        self.study.log_params(params)
        self.study.set_tags({f"version.{k}": v for k, v in package_versions().items()})
        self.client.log_text(self.study.run_id, mask_credentials_in_text(study_text), "study.yaml")
        return self.study.run_id

    def start_trial(self, number: int, params: dict[str, Any]) -> _Run:
        """Open the child run of one trial and record its sampled params."""
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{number:03d}", tags={
            "mlflow.parentRunId": self.study.run_id, "hpsearch.role": "trial",
            "hpsearch.trial": str(number), "hpsearch.state": "running"})
        trial = self._open_trial = _Run(self.client, run.info.run_id)
        if params:
            trial.log_params(params)
        return trial

    def end_trial(self, run: _Run, result: TrialResult, model: Any = None) -> None:
        """Final scores, state and (if any) the trained model; closes the child run."""
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
        if model is not None and self.log_models:
            run.log_model(model)
        run.end(STATUS[result.state])
        self._open_trial = None

    def end_study(self, result: StudyResult, extra: dict[str, Any], status: str = "FINISHED") -> None:
        """Best params/score, test score and the refit best model on the study run; closes it."""
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
        if extra:
            study.set_tags({f"hpsearch.{k}": v for k, v in extra.items()})
        if result.best_estimator is not None:
            study.log_model(result.best_estimator)
            self._register(registry_name(result.name), study.run_id)
        study.end(status)

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
        for run in self.client.search_runs(
                [self.experiment_id], f"tags.`mlflow.parentRunId` = '{self.study.run_id}' and "
                "attributes.status = 'RUNNING'"):
            if int(run.data.tags.get("hpsearch.trial", -1)) in numbers:
                _Run(self.client, run.info.run_id).set_tags(
                    {"hpsearch.state": "failed", "hpsearch.reason": "killed: its worker stopped sending heartbeats"})
                self.client.set_terminated(run.info.run_id, status="KILLED")

    def log_range_test(self, study_name: str, test: Any, plot_path: Path) -> str:
        """One run (tag ``hpsearch.role=lr-find``): the loss and LR per step, the findings, the plot."""
        experiment_id = self._experiment()
        suffix = f"-{test.optimizer}" if test.optimizer else ""
        run = _Run(self.client, self.client.create_run(experiment_id, run_name=f"lr-find{suffix}", tags={
            "hpsearch.role": "lr-find", "hpsearch.study": study_name}).info.run_id)
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
        self.client.log_artifact(run.run_id, str(plot_path))
        run.end("FINISHED")
        return run.run_id

    def abort(self, reason: str, status: str = "KILLED") -> None:
        """Close the open trial run and the study run (KILLED or FAILED) so nothing is left RUNNING."""
        for run in (self._open_trial, self.study):
            if run is not None:
                run.set_tags({"hpsearch.state": "failed", "hpsearch.reason": reason})
                run.end(status)
