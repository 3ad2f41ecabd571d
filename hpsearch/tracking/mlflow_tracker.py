"""The tracker that records a study in MLflow (the layout: :mod:`hpsearch.tracking.layout`).

A trial's curves and its model upload go out on one upload thread, in order, while training goes on; the
study's report is drawn in a child process during the refit. A server that fails is retried with backoff
(``$HPSEARCH_TRACKING_RETRY_SECONDS`` per operation); what it missed is kept and sent when it answers again.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
import mlflow.sklearn
from mlflow import MlflowClient
from mlflow.entities import RunInfo
from mlflow.exceptions import MlflowException

from hpsearch.errors import TrackingError, TrackingUnavailable, mask_credentials, mask_credentials_in_text
from hpsearch.results import DataSplits, StudyResult, TrialResult, params_text
from hpsearch.tracking._report_process import REPORT_PROCESS, child_env, draw_report
from hpsearch.tracking._retry import Retry, check_server, retry_budget, short_error
from hpsearch.tracking._run import BufferedRun, log_table, package_versions, save_model, warm_model_saving
from hpsearch.tracking._settings import quiet_mlflow
from hpsearch.tracking.datasets import RunDatasets
from hpsearch.tracking.layout import EXPERIMENT_TAGS, STATUS, study_description, trial_metrics
from hpsearch.tracking.lr_find_run import log_range_test
from hpsearch.tracking.reading import collect
from hpsearch.tracking.registry import register_champion, registry_name
from hpsearch.tracking.system_metrics import SystemMetrics

_log = logging.getLogger(__name__)
_RUN_NAME_CHARACTERS = 120  # the runs table shows about this much of a name


class MlflowTracker:
    """Records a study in MLflow: one study run, one child run per trial.

    Transient server failures are retried with backoff (``retry_seconds`` per operation); what still
    fails is kept and sent later in the study, and what never reached the server is reported at the end.
    """

    def __init__(self, tracking_uri: str, experiment: str, log_models: bool = True,
                 retry_seconds: float | None = None, system_metrics: bool = False) -> None:
        quiet_mlflow()
        self.tracking_uri, self.experiment_name, self.log_models = tracking_uri, experiment, log_models
        self._system_metrics = SystemMetrics(tracking_uri) if system_metrics else None
        self._client: MlflowClient | None = None
        self.experiment_id: str | None = None
        self.study: BufferedRun | None = None
        self._open_trial: BufferedRun | None = None
        self._retry = Retry(tracking_uri, retry_budget() if retry_seconds is None else retry_seconds)
        self._unsent: list[BufferedRun] = []
        self._tried: set[int] = set()
        self._uploads: ThreadPoolExecutor | None = None
        self._uploading: list[Future] = []
        self._datasets = RunDatasets(lambda: self.client, self._retry)

    @property
    def client(self) -> MlflowClient:
        """The MLflow client, created on first use (creating it may create the local SQLite store)."""
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def check_reachable(self) -> None:
        """Fail fast, before any training, when the tracking server does not answer."""
        check_server(self.tracking_uri)

    def ensure_experiment(self) -> str:
        """The id of the experiment (created, or restored when deleted)."""
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            for key, value in EXPERIMENT_TAGS.items():
                if key not in found.tags:  # an experiment from before hpsearch tagged them
                    self.client.set_experiment_tag(found.experiment_id, key, value)
            return found.experiment_id
        location = None
        if urlsplit(self.tracking_uri).scheme in ("sqlite", "", "file"):
            location = (Path.cwd() / "mlartifacts").as_uri()
        return self.client.create_experiment(self.experiment_name, artifact_location=location, tags=EXPERIMENT_TAGS)

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
        except OSError as exc:  # the artifact store's disk is full or read-only: nothing of the study could be kept
            where = getattr(exc, "filename2", None) or exc.filename or "the artifact store"
            self.abort(f"artifacts not writable: {exc.strerror or exc}", status="FAILED")
            raise TrackingError(f"cannot store the study's files in MLflow ({exc.strerror or exc}: {where}); free "
                                "space there, or give the artifacts another place, then run again") from None
        self._in_background(warm_model_saving)
        if self._system_metrics is not None:
            self._system_metrics.start(run_id)
        return run_id

    def _start_study(self, name: str, params: dict[str, Any], study_text: str, resume: bool,
                     run_id: str | None) -> str:
        self.experiment_id = self._retry("the experiment", self.ensure_experiment)
        previous = self._retry("finding the study run", lambda: self.client.search_runs(
            [self.experiment_id], f"tags.`hpsearch.study` = '{name}' and tags.`hpsearch.role` = 'study'",
            order_by=["attributes.start_time DESC"], max_results=1)) if resume and not run_id else []
        if resume and (run_id or previous):
            self.study = BufferedRun(self.client, run_id or previous[0].info.run_id, self._retry, "the study run")
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
        self.study = BufferedRun(self.client, None, self._retry, "the study run", create=lambda: self.client.create_run(
            self.experiment_id, run_name=name, tags={"hpsearch.study": name, "hpsearch.role": "study"}).info)
        self.study.log_params(params)
        self.study.set_tags({f"version.{k}": v for k, v in package_versions().items()})
        self.study.flush()
        with tempfile.TemporaryDirectory(prefix="hpsearch-study-") as folder:
            (Path(folder) / "study.yaml").write_text(mask_credentials_in_text(study_text), encoding="utf-8")
            self._retry("the study file", lambda: self.study.log_artifacts(Path(folder)))
        return self.study.run_id

    def _create_trial(self, number: int, params: dict[str, Any]) -> RunInfo:
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
                                            "hpsearch.process": f"{socket.gethostname()}:{os.getpid()}"}, params)
        self._tried.discard(number)
        self._datasets.log_trial(info.run_id)
        return info

    def log_datasets(self, data: DataSplits) -> None:
        """Every split as an MLflow dataset on the study run; each trial run created from now on gets those it
        trained and was scored on (:mod:`hpsearch.tracking.datasets`)."""
        self._datasets.log_study(self.study.run_id, data)

    def _new_trial_run(self, number: int, tags: dict[str, str], params: dict[str, Any] | None = None) -> RunInfo:
        """A child run of the study run named ``trial-NNN`` and its params (``trial-003 n_hidden=2, ...``: the
        runs table tells trials apart at a glance), which its description repeats in full."""
        described = params_text(params or {})
        name = f"trial-{number:03d} {described}"[:_RUN_NAME_CHARACTERS].strip()
        return self.client.create_run(self.experiment_id, run_name=name, tags={
            "mlflow.parentRunId": self.study.run_id, "hpsearch.role": "trial", "hpsearch.trial": str(number),
            **({"mlflow.note.content": f"trial {number}: {described}"} if described else {}), **tags}).info

    def start_trial(self, number: int, params: dict[str, Any]) -> BufferedRun:
        """Open the child run of one trial with its sampled params on the upload thread, while the trial trains
        (what MLflow refuses or misses stays buffered and goes with the trial's curves or its end)."""
        trial = self._open_trial = BufferedRun(self.client, None, self._retry, f"trial {number}",
                                        create=lambda: self._create_trial(number, params),
                                        background=self._in_background)
        trial.log_params(params, now=False)
        trial.opened = self._in_background(trial.send_once)
        return trial

    def end_trial(self, run: BufferedRun, result: TrialResult, model: Any = None) -> None:
        """Final scores, state and (if any) the trained model; closes the child run. Sets ``result.run_id``."""
        run.log_metrics(trial_metrics(result))
        validation = result.val_metrics
        if validation:  # a step past the last epoch: Keras' own val_accuracy curve may share the name
            run.log_metrics(validation, step=max(result.fold_epochs, default=0))
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

    def _finish_trial(self, run: BufferedRun, status: str) -> None:
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

        It is drawn in a child process (:func:`hpsearch.guidance.report.report_process_main`), which starts now so
        that its imports overlap the refit: Keras' training loop holds the GIL most of the time, so plotting on a thread
        of this process slowed the refit by about as long as the plotting took. The child runs at a lower CPU
        priority and only draws: this process reads the study back from MLflow and attaches the plots, so the
        child never loads MLflow (a second or two of CPU taken from the refit on a machine it keeps busy).
        """
        process = subprocess.Popen([sys.executable, "-c", REPORT_PROCESS], stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=child_env())
        self._in_background(lambda: self._log_report(process))

    def _log_report(self, process: subprocess.Popen) -> None:
        """Hand the study to the report process, wait for its plots and attach them; a report that fails never
        fails the study (it is recorded already): it is a warning."""
        with tempfile.TemporaryDirectory(prefix="hpsearch-report-") as folder:
            try:
                record = self._retry("reading the study back", lambda: collect(
                    self.client, self.experiment_name, self.study.run_id))
                request = {"folder": folder, "record": record.to_dict()}
            except Exception as exc:
                process.communicate("")  # EOF: the report process exits
                _log.warning("hpsearch: the study report was not logged: %s: %s", type(exc).__name__, short_error(exc))
                return
            failure = draw_report(process, json.dumps(request))
            if failure is None:
                try:
                    self._retry("the study report", lambda: self.study.log_artifacts(Path(folder), "report"))
                except (TrackingUnavailable, MlflowException, OSError) as exc:
                    failure = short_error(exc)
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
        """End the upload thread (a later upload starts another), and the system metrics monitor."""
        self._stop_system_metrics()
        self.wait()
        if self._uploads is not None:
            self._uploads.shutdown()
            self._uploads = None

    def _stop_system_metrics(self) -> None:
        if self._system_metrics is not None:
            self._system_metrics.stop()

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
        self._stop_system_metrics()  # before the run closes: the monitor sends what it sampled last
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
            study.log_metrics({"test_score": result.test_score, **result.test_metrics})
        if result.final_valid_score is not None:
            study.log_metrics({"final_valid_score": result.final_valid_score})
        if extra:
            study.set_tags({f"hpsearch.{k}": v for k, v in extra.items()})
        study.set_tags({"mlflow.note.content": study_description(result)})
        try:
            if result.trials:  # one table of every trial (MLflow's artifact view shows it as a table)
                try:
                    self._retry("the trials table", lambda: log_table(self.client, study.run_id, result.trials_table()))
                except OSError as exc:  # a full artifact disk: the trials are recorded run by run already
                    _log.warning("hpsearch: the trials table was not saved: %s", exc.strerror or exc)
            if result.best_estimator is not None:
                study.finish(result.best_estimator)
                result.model_lost = study.model_lost
                if study.model_lost is None:
                    self._retry("registering the best model", lambda: register_champion(
                        self.client, registry_name(result.name), study.run_id))
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
            save_model(result.best_estimator, folder)
            saved = f"; the refit best model is saved in {folder}"
        _log.warning("hpsearch: MLflow at %s stopped answering; not recorded there: %s. The scores printed below "
                     "are complete%s", mask_credentials(self.tracking_uri), ", ".join(missed), saved)

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
            killed = BufferedRun(self.client, found[0].info.run_id if found else None, self._retry, f"trial {number}",
                          create=lambda number=number: self._new_trial_run(number, tags))
            killed.set_tags(tags)
            killed.finish(status="KILLED")

    def log_range_test(self, study_name: str, test: Any, plot_path: Path) -> str:
        """One run (tag ``hpsearch.role=lr-find``): the loss and LR per step, the findings, the plot."""
        try:
            experiment_id = self._retry("the experiment", self.ensure_experiment)
            return log_range_test(self.client, self._retry, experiment_id, study_name, test, plot_path)
        except TrackingUnavailable as exc:
            raise self._unavailable(exc) from None

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
