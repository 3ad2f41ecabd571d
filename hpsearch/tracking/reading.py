"""Reading studies back from MLflow: the newest finished study run, its delivered model (:func:`load_best`),
and the whole study as plain data (:func:`collect`, :func:`read_study`) for reports and importances."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from hpsearch.config.schema import tracking_uri as resolve_uri
from hpsearch.errors import TrackingError, mask_credentials
from hpsearch.tracking._settings import quiet_mlflow
from hpsearch.tracking.layout import fold_prefix
from hpsearch.tracking.recorded import StudyRecord, TrialRecord, parse_param


def client_at(uri: str) -> MlflowClient:
    """An MLflow client at ``uri``, with hpsearch's MLflow defaults applied (:func:`quiet_mlflow`)."""
    quiet_mlflow()
    return MlflowClient(uri)


def experiment_named(client: MlflowClient, name: str) -> Any:
    """The MLflow experiment ``name`` at the client's store; :class:`TrackingError` where there is none."""
    found = client.get_experiment_by_name(name)
    if found is None:
        raise TrackingError(f"no MLflow experiment named {name!r} at {mask_credentials(client.tracking_uri)}")
    return found


def latest_study_run(experiment: str, tracking_uri: str | None = None) -> tuple[MlflowClient, Any]:
    """(client, the newest finished study run with a best model) of ``experiment``."""
    client = client_at(resolve_uri(tracking_uri))
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
    """The delivered model of a recorded study, ready to ``predict``.

    It is whatever the search delivered (the refit, the best trial's model or the ensemble, ``search.final``):
    the whole pipeline, the scaler included, when a pipeline was searched. It loads on any Keras backend.

    Parameters
    ----------
    name : str
        An experiment (its newest finished study run's model) or a registered model (``<study>-best``: its
        ``champion`` version).
    tracking_uri : str, optional
        Where the study was recorded. Default: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` here.

    Returns
    -------
    estimator
        The fitted scikit-learn estimator (``predict``, and ``predict_proba`` for classifiers).

    Raises
    ------
    TrackingError
        No such experiment or registered model, or no finished study in it.

    Examples
    --------
    >>> import hpsearch
    >>> model = hpsearch.load_best("quickstart")  # doctest: +SKIP
    >>> model.predict(X_new)  # doctest: +SKIP
    """
    uri = resolve_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    client = client_at(uri)
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
        cv = any(f"{fold_prefix(0, True)}loss" in run.data.metrics for run in runs)
        trials = [_trial_record(client, run, fold_prefix(0, cv)) for run in runs]
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
    return collect(client_at(uri), experiment)
