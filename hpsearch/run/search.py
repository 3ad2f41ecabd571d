"""One path through a search: search, deliver the final model, test it once, record it.

:func:`run_search` is the engine both doors share: :func:`~hpsearch.run.study.run_study` (the CLI's study
files) and :class:`hpsearch.SearchCV` (scikit-learn code) only assemble its parts differently."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from hpsearch.errors import RefitFailed, Terminated, TrialFailed, mask_credentials
from hpsearch.evaluation.evaluator import Evaluator
from hpsearch.evaluation.metrics import named_metrics
from hpsearch.models.ensemble import select_ensemble
from hpsearch.results import DataSplits, NoObserver, StudyResult, TrialObserver, TrialResult
from hpsearch.strategies.base import Strategy
from hpsearch.tracking.base import Tracker

_log = logging.getLogger(__name__)
REFIT_TRIES = 3  # seeds tried for the best params' refit before the study fails (training is random)
Refit = Callable[[dict[str, Any], int], Any]  # (params, seed offset) -> the model fitted on all the training data
Choose = Callable[[list[TrialResult]], int]  # the study's trials -> the number of the one to deliver


def run_search(name: str, strategy: Strategy, evaluator: Evaluator, tracker: Tracker, study_params: dict[str, Any],
               study_text: str, refit: Refit | None,
               test: tuple[Any, Any] | None = None, observer: TrialObserver | None = None,
               report: bool = False, final: str = "refit", validation: tuple[Any, Any] | None = None,
               ensemble_size: int = 5, datasets: DataSplits | None = None, worker: bool = False,
               choose: Choose | None = None) -> StudyResult:
    """Search with ``strategy``, deliver the best candidate's model, score it once on ``test``, record it all.

    ``worker``: a worker's share of a study: trials only; the study run is closed by the last worker out, and
    refitting is left to ``hpsearch run``. ``refit=None``: no delivered model. ``choose``: which trial is the
    study's best (default: the best score; ``SearchCV(refit=callable)``). ``report``: draw the study's report
    (behind the refit) when the search is over. ``final``: ``best_trial`` delivers the best trial's own model
    when this process trained it (else its params are refitted), ``refit`` refits them on all the training data.
    ``validation``: where the delivered model's validation score is measured. ``datasets``: the splits the tracker
    records as the study's data.
    """
    offset = 0
    observer = observer or NoObserver()
    tracker.check_reachable()  # reads only; then the first write: the strategy's storage
    strategy.prepare(trial_setup(study_params))
    shared = strategy.coordination
    observer.search_started(strategy.planned_trials())
    study_run = tracker.start_study(name, study_params, study_text, resume=shared.resumes(),
                                    run_id=shared.shared_run_id())
    shared.share_run_id(study_run)
    if datasets is not None:
        tracker.log_datasets(datasets)
    tracker.close_killed_trials(shared.killed_trials())
    evaluator.budget.start(shared.study_results([]))
    try:
        with _heap_frozen():
            trials = strategy.run_search(evaluator)
            if not worker:
                trials += shared.wait_for_others(evaluator)
            trials = shared.study_results(trials)
            if report and not worker:
                tracker.start_report()
            result = StudyResult(name, trials, evaluator.scoring, study_run_id=study_run,
                                 experiment_id=tracker.experiment_id, tracking_uri=tracker.tracking_uri,
                                 stopped_by=evaluator.budget.exhausted(), search_started=evaluator.budget.started)
            if not worker and result.finished:
                result.chosen = choose(trials) if choose is not None else strategy.best_of(trials)
            if result.best is not None and refit is not None and not worker:
                offset = _deliver(result, evaluator, tracker, refit, final, validation, ensemble_size)
                if validation is not None:
                    result.final_valid_score = evaluator.score(result.best_estimator, *validation)
                if test is not None:
                    result.test_score = evaluator.score(result.best_estimator, *test)
                    result.test_metrics = named_metrics(result.best_estimator, *test)
    except BaseException as exc:  # Ctrl-C or a bug: close the MLflow runs, never leave them RUNNING
        interrupted = isinstance(exc, KeyboardInterrupt)
        reason = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"
        tracker.abort(reason if interrupted else f"{type(exc).__name__}: {exc}",
                      status="KILLED" if interrupted else "FAILED")
        raise
    if worker and (shared.busy() or strategy.planned_trials() > 0 and result.stopped_by is None):
        tracker.wait()
        return result  # other (or fresh) workers are still at it; the last one out closes the study run
    extra = {"tracking_uri": mask_credentials(tracker.tracking_uri or "")}
    if offset:
        extra["refit_seed"] = f"seed + {offset}"
    if result.stopped_by:
        extra["stopped_by"] = result.stopped_by
    if result.final:
        extra["final"] = result.final
    if result.ensemble:
        extra["ensemble"] = json.dumps(result.ensemble)
    tracker.end_study(result, extra, status="FINISHED" if result.best is not None else "FAILED")
    return result


def open_shared_study(name: str, strategy: Strategy, tracker: Tracker, study_params: dict[str, Any],
                      study_text: str) -> str | None:
    """Open a shared study's storage and its MLflow study run before its workers start, so that they all join
    them; returns the study run's id."""
    tracker.check_reachable()
    strategy.prepare(trial_setup(study_params))
    run_id = tracker.start_study(name, study_params, study_text, resume=True,
                                 run_id=strategy.coordination.shared_run_id())
    strategy.coordination.share_run_id(run_id)
    return run_id


def _deliver(result: StudyResult, evaluator: Evaluator, tracker: Tracker, refit: Refit, final: str,
             validation: tuple[Any, Any] | None, ensemble_size: int) -> int:
    """Make the delivered model (``result.best_estimator``, ``result.final``); returns the refit's seed offset."""
    best = result.best
    if final in ("best_trial", "ensemble"):
        wanted = ensemble_size if final == "ensemble" and validation is not None else 1
        pool = _trial_models(result, evaluator, tracker, wanted)
        if pool and pool[0][0] == best.number:
            if wanted == 1:
                result.best_estimator, result.final = pool[0][1], "best_trial"
                return 0
            if len(pool) < ensemble_size:
                _log.warning("hpsearch: search.ensemble_size is %d but only %d finished trials' models are "
                             "available; the ensemble is chosen among those", ensemble_size, len(pool))
            selection = select_ensemble(pool, *validation, evaluator.scorers.scorer, ensemble_size)
            result.best_estimator, result.final, result.ensemble = selection.estimator, "ensemble", selection.weights
            return 0
        _log.warning("hpsearch: the best trial's (%d) model is neither in this process nor in MLflow (tracking off, "
                     "tracking.log_models: false, or never uploaded); refitting its params for the final model",
                     best.number)
    result.final = "refit"
    result.best_estimator, offset = _refit_best(refit, best.params)
    return offset


def _trial_models(result: StudyResult, evaluator: Evaluator, tracker: Tracker, size: int) -> list[tuple[int, Any]]:
    """(trial number, fitted model) of the ``size`` best finished trials whose model is at hand, best first: kept
    in this process, else loaded from the trial's record (trained by another worker, process or run)."""
    pool = []
    for trial in sorted(result.finished, key=lambda t: -t.score)[:size]:
        model = evaluator.kept_model(trial.number)
        if model is None and trial.run_id:
            model = tracker.trial_model(trial.run_id)
        if model is not None:
            pool.append((trial.number, model))
    return pool


def _refit_best(refit: Refit, params: dict[str, Any]) -> tuple[Any, int]:
    """The refit model of the best params and the seed offset it took: a refit whose loss diverged (the trial's
    did not; the refit draws other initial weights and batches) is tried again with the next seed."""
    for offset in range(REFIT_TRIES):
        try:
            return refit(params, offset), offset
        except TrialFailed as exc:
            failure = exc
            if offset + 1 < REFIT_TRIES:
                _log.warning("hpsearch: refitting the best params failed (%s); trying again with seed + %d",
                             exc, offset + 1)
    raise RefitFailed(f"refitting the best trial's params {params} on the training data failed with {REFIT_TRIES} "
                      f"seeds ({failure}), so the study has no model; every trial is recorded. Narrow the search "
                      "space towards steadier candidates (a lower learning_rate range) and run the study again")


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """Leave what is alive before the search (TensorFlow's, MLflow's and the data's objects) out of the
    garbage collections between trials: a full collection walks ~0.5 M such objects (~0.2 s) otherwise."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# Study params that do not change what a trial computes: a resumed study may differ in these.
_NOT_SETUP = ("n_trials", "storage", "sampler", "pruner", "auto.", "execution.", "backend")


def trial_setup(study_params: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs' trials comparable (data, model, training, space, seed, cv, scoring)."""
    return {k: v for k, v in study_params.items() if not k.startswith(_NOT_SETUP)}
