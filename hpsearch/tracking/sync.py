"""``hpsearch sync``: copy a study recorded with ``run --offline`` to the configured tracking server.

Every run of the study's experiment is copied with its params, tags, full metric histories (steps and
timestamps), artifacts, status and times; parent links and ``hpsearch.best_run_id`` point to the copies;
model versions of the copied runs are registered again with their aliases. A copy carries the tag
``hpsearch.synced_from`` (the source run id) and is skipped by the next sync, so re-running it adds nothing.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from hpsearch.config.schema import absolute_sqlite
from hpsearch.errors import TrackingError, mask_credentials
from hpsearch.tracking.mlflow_tracker import MlflowTracker
from hpsearch.tracking.reading import client_at, experiment_named
from hpsearch.tracking.registry import ensure_registered_model

OFFLINE_URI = "sqlite:///mlflow-offline.db"
SYNCED_FROM = "hpsearch.synced_from"
_COMPLETE = "hpsearch.sync_complete"
_PARENT = "mlflow.parentRunId"


def offline_uri() -> str:
    """The offline store of the working folder, as an absolute ``sqlite:`` URI."""
    return absolute_sqlite(OFFLINE_URI)


@dataclass
class SyncReport:
    """What a sync did: runs copied, runs already there, model versions registered."""

    experiment_id: str
    copied: int = 0
    skipped: int = 0
    versions: int = 0


def _all_runs(client: MlflowClient, experiment_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _source(uri: str, experiment: str) -> tuple[MlflowClient, str]:
    if urlsplit(uri).scheme == "sqlite" and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise TrackingError(f"no offline store at {mask_credentials(uri)}: record a study there first with "
                            "`hpsearch run --offline STUDY` (in this folder), or name the store with --from")
    client = client_at(uri)
    return client, experiment_named(client, experiment).experiment_id


def sync_experiment(experiment: str, source_uri: str, target_uri: str) -> SyncReport:
    """Copy the runs of ``experiment`` from ``source_uri`` to ``target_uri`` (those not copied yet)."""
    source_uri, target_uri = absolute_sqlite(source_uri), absolute_sqlite(target_uri)
    if source_uri == target_uri:
        raise TrackingError(f"--from and --to are the same store ({mask_credentials(source_uri)}); "
                            "nothing to copy")
    source, source_experiment = _source(source_uri, experiment)
    tracker = MlflowTracker(target_uri, experiment)
    tracker.check_reachable()
    try:
        report = SyncReport(tracker.ensure_experiment())
        _copy(source, source_experiment, tracker.client, report)
    except MlflowException as exc:
        raise TrackingError(f"sync to {mask_credentials(target_uri)} stopped: {exc.message}; "
                            "run it again to finish (runs copied already are skipped)") from None
    return report


def _copy(source: MlflowClient, source_experiment: str, target: MlflowClient, report: SyncReport) -> None:
    runs = sorted(_all_runs(source, source_experiment), key=lambda r: (_PARENT in r.data.tags, r.info.start_time))
    copies = {r.data.tags[SYNCED_FROM]: r for r in _all_runs(target, report.experiment_id)
              if SYNCED_FROM in r.data.tags}
    ids: dict[str, str] = {}
    for run in runs:
        copy = copies.get(run.info.run_id)
        if copy is not None and copy.data.tags.get(_COMPLETE) == "true":
            ids[run.info.run_id] = copy.info.run_id
            report.skipped += 1
            continue
        if copy is not None:  # a copy an earlier sync left half-way: start it over
            target.delete_run(copy.info.run_id)
        ids[run.info.run_id] = _copy_run(source, target, run, report.experiment_id, ids)
        report.copied += 1
    for run in runs:
        best = run.data.tags.get("hpsearch.best_run_id")
        if best in ids:
            target.set_tag(ids[run.info.run_id], "hpsearch.best_run_id", ids[best])
    report.versions = _copy_versions(source, target, ids)


def _copy_run(source: MlflowClient, target: MlflowClient, run: Any, experiment_id: str,
              ids: dict[str, str]) -> str:
    """One run, copied whole; returns the copy's id."""
    tags = dict(run.data.tags)
    if _PARENT in tags:
        tags[_PARENT] = ids.get(tags[_PARENT], tags[_PARENT])
    tags[SYNCED_FROM] = run.info.run_id
    tags.pop(_COMPLETE, None)
    run_id = target.create_run(experiment_id, start_time=run.info.start_time, tags=tags,
                               run_name=run.info.run_name).info.run_id
    params = [Param(k, v) for k, v in run.data.params.items()]
    for start in range(0, len(params), 100):
        target.log_batch(run_id, params=params[start:start + 100])
    history = [Metric(m.key, m.value, m.timestamp, m.step)
               for key in run.data.metrics for m in source.get_metric_history(run.info.run_id, key)]
    for start in range(0, len(history), 1000):
        target.log_batch(run_id, metrics=history[start:start + 1000])
    if run.inputs and run.inputs.dataset_inputs:
        target.log_inputs(run_id, datasets=run.inputs.dataset_inputs)
    if source.list_artifacts(run.info.run_id):
        with tempfile.TemporaryDirectory() as folder:
            local = source.download_artifacts(run.info.run_id, "", folder)
            target.log_artifacts(run_id, local)
    target.log_batch(run_id, tags=[RunTag(_COMPLETE, "true")])
    if run.info.status != "RUNNING":
        target.set_terminated(run_id, status=run.info.status, end_time=run.info.end_time)
    return run_id


def _copy_versions(source: MlflowClient, target: MlflowClient, ids: dict[str, str]) -> int:
    """Register the copied runs' model versions again (with their aliases), unless already registered."""
    registered = 0
    for source_id, target_id in ids.items():
        known = {v.name for v in target.search_model_versions(f"run_id = '{target_id}'")}
        for version in source.search_model_versions(f"run_id = '{source_id}'"):
            if version.name in known:
                continue
            ensure_registered_model(target, version.name)
            path = (version.source.split(f"runs:/{source_id}/", 1)[-1] if version.source.startswith("runs:/")
                    else "model")
            copy = target.create_model_version(version.name, source=f"runs:/{target_id}/{path}", run_id=target_id)
            for alias in source.get_model_version(version.name, version.version).aliases:
                target.set_registered_model_alias(version.name, alias, copy.version)
            registered += 1
    return registered
