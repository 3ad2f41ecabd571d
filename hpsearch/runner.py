"""One path through a search: validate everything, search, refit the best, test it once, record it.

:func:`run_search` is the engine both doors share: :func:`run_study` (the CLI's study files) and
:class:`hpsearch.SearchCV` (scikit-learn code) only assemble its parts differently.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sklearn.base import is_classifier

from hpsearch.budget import Budget
from hpsearch.config import StudyConfig
from hpsearch.data import Dataset, load_dataset
from hpsearch.dimensions import Categorical, Fixed
from hpsearch.ensemble import select_ensemble
from hpsearch.errors import ConfigError, RefitFailed, mask_credentials
from hpsearch.evaluation import DEFAULT_SCORING, Evaluator, Splits, make_folds
from hpsearch.execution import make_executor
from hpsearch.fitting import StudyFitter, TrialFailed
from hpsearch.models.backend_choice import BackendChoice, choose_backend, use_backend
from hpsearch.models.estimator import check_params, resolve_factory
from hpsearch.results import NoObserver, StudyResult, TrialObserver
from hpsearch.space import SearchSpace, conditioned_on_optimizer
from hpsearch.strategies import Strategy, make_strategy
from hpsearch.tracking_base import NullTracker, Tracker

_log = logging.getLogger(__name__)
REFIT_TRIES = 3  # seeds tried for the best params' refit before the study fails (training is random)
Refit = Callable[[dict[str, Any], int], Any]  # (params, seed offset) -> the model fitted on all the training data


def run_search(name: str, strategy: Strategy, evaluator: Evaluator, tracker: Tracker, study_params: dict[str, Any],
               study_text: str, refit: Refit | None,
               test: tuple[Any, Any] | None = None, observer: TrialObserver | None = None,
               report: bool = False, final: str = "refit", validation: tuple[Any, Any] | None = None,
               ensemble_size: int = 5) -> StudyResult:
    """Search with ``strategy``, deliver the best candidate's model, score it once on ``test``, record it all.

    ``refit=None`` is a worker's share of a study: trials only; the study run is closed by the
    last worker out, and refitting is left to ``hpsearch run``. ``report``: draw the study's report
    (behind the refit) when the search is over. ``final``: ``best_trial`` delivers the best trial's own model
    when this process trained it (else its params are refitted), ``refit`` refits them on all the training data.
    ``validation``: where the delivered model's validation score is measured.
    """
    offset = 0
    observer = observer or NoObserver()
    tracker.check_reachable()  # reads only; then the first write: the strategy's storage
    strategy.prepare(trial_setup(study_params))
    observer.search_started(strategy.planned_trials())
    study_run = tracker.start_study(name, study_params, study_text, resume=strategy.resumes(),
                                    run_id=strategy.shared_run_id())
    strategy.share_run_id(study_run)
    tracker.close_killed_trials(strategy.killed_trials())
    evaluator.budget.start(strategy.study_results([]))
    try:
        with _heap_frozen():
            trials = strategy.run_search(evaluator)
            if refit is not None:
                trials += strategy.wait_for_others(evaluator)
            trials = strategy.study_results(trials)
            if report and refit is not None:
                tracker.start_report()
            result = StudyResult(name, trials, evaluator.scoring, study_run_id=study_run,
                                 experiment_id=tracker.experiment_id, tracking_uri=tracker.tracking_uri,
                                 stopped_by=evaluator.budget.exhausted(), search_started=evaluator.budget.started)
            if result.best is not None and refit is not None:
                offset = _deliver(result, evaluator, tracker, refit, final, validation, ensemble_size)
                if validation is not None:
                    result.final_valid_score = evaluator.score(result.best_estimator, *validation)
                if test is not None:
                    result.test_score = evaluator.score(result.best_estimator, *test)
    except BaseException as exc:  # Ctrl-C or a bug: close the MLflow runs, never leave them RUNNING
        interrupted = isinstance(exc, KeyboardInterrupt)
        tracker.abort("interrupted (Ctrl-C)" if interrupted else f"{type(exc).__name__}: {exc}",
                      status="KILLED" if interrupted else "FAILED")
        raise
    if refit is None and (strategy.busy() or strategy.planned_trials() > 0 and result.stopped_by is None):
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
            selection = select_ensemble(pool, *validation, evaluator.scoring, ensemble_size)
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


@dataclass
class Plan:
    """A validated study file, ready to run: nothing has been written anywhere yet."""

    study: StudyConfig
    data: Dataset
    fitter: StudyFitter
    space: SearchSpace
    strategy: Strategy
    splits: Splits
    backend: BackendChoice

    @property
    def n_candidates(self) -> int:
        return self.strategy.planned_trials()

    @property
    def scoring(self) -> str:
        """The scikit-learn scorer in force: the study's, else the task's default."""
        return self.study.search.scoring or DEFAULT_SCORING[self.data.task]

    def tracker(self) -> Tracker:
        """The study's MLflow tracker (nothing is written until it is used); none if tracking is off."""
        tracking = self.study.tracking
        if not tracking.enabled:
            return NullTracker()
        from hpsearch.tracking import MlflowTracker

        return MlflowTracker(tracking.resolved_uri(), self.study.experiment_name, tracking.log_models)


def plan_study(study: StudyConfig) -> Plan:
    """Load the data and check the factory, params and space; raise user errors before any write."""
    if study.data.scale != "none" and study.data.dataset == "fashion_mnist":
        raise ConfigError("images need data.scale: none (pixels are already scaled to [0, 1])", field="data.scale")
    data = load_dataset(study.data, study.seed if study.data.seed is None else study.data.seed)
    if study.data.scale != "none" and data.X_train.ndim > 2:
        raise ConfigError(f"data.scale: {study.data.scale} needs tabular features; these have shape "
                          f"{data.X_train.shape[1:]}; use scale: none", field="data.scale")
    _check_final(study, data.task)
    backend = choose_backend(study.training.backend, study.model.factory, _steps_per_fit(study, len(data.X_train)))
    use_backend(backend.name)  # before anything imports Keras (the user's factory module may)
    factory = resolve_factory(study.model.factory)
    check_params(factory, list(study.model.params), "model.params")
    check_params(factory, list(study.search.space), "search.space")
    fitter = StudyFitter(study, factory, data.task)
    cv = study.search.cv
    folds = make_folds(data.X_train, data.y_train, cv, is_classifier(fitter.new_estimator({}))) if cv else []
    splits = Splits(data.X_train, data.y_train, folds, data.X_valid, data.y_valid)
    space = conditioned_on_optimizer(study.search.space)
    space.check_strategy(study.search.strategy)
    strategy = make_strategy(study.search, space, study.seed, study.name)
    return Plan(study, data, fitter, space, strategy, splits, backend)


def _check_final(study: StudyConfig, task: str) -> None:
    if study.search.final != "ensemble":
        return
    if study.search.cv:
        raise ConfigError("search.final: ensemble chooses trial models on the validation split, and with "
                          f"search.cv: {study.search.cv} every trial model trained on only part of the training "
                          "data; use search.cv: null (holdout) or search.final: refit", field="search.final")
    if task == "multilabel":
        raise ConfigError("search.final: ensemble averages regression outputs or votes single-label classes; "
                          "this target is multilabel: use search.final: best_trial", field="search.final")


def _steps_per_fit(study: StudyConfig, n_train: int) -> int:
    """Batches one trial's fit runs at most: epochs x batches per epoch (of a cv fold's training part)."""
    rows = n_train - n_train // study.search.cv if study.search.cv else n_train
    return study.training.epochs * math.ceil(rows / study.training.batch_size)


def final_model(study: StudyConfig, task: str) -> str:
    """``search.final`` in force: ``auto`` is the greedy ensemble of the best trials' models under holdout (they
    trained on exactly the refit's data; on the chapter's study under a 60 s budget the ensemble had the best test
    MSE of the three options in 4 of 5 seeds, benchmarks/RESULTS.md), a refit on all the data with cv
    (trial models then saw only part of it)."""
    if study.search.final != "auto":
        return study.search.final
    if study.search.cv:
        return "refit"
    return "best_trial" if task == "multilabel" else "ensemble"


def wants_auto_learning_rate(study: StudyConfig) -> bool:
    """``learning_rate: auto`` in the space: the LR range test sets the searched range."""
    return study.search.space.get("learning_rate") == Fixed("auto")


def resolve_auto_learning_rate(plan: Plan, tracker: Tracker) -> dict[str, Any]:
    """Run the range test (once per optimizer), put the found ranges in the space, log them.

    Returns the study-run params that record the chosen ranges.
    """
    from hpsearch.lr_finder import optimizers_of, plot, range_test

    ranges, params = {}, {}
    for optimizer in optimizers_of(plan):
        test = range_test(plan, optimizer)
        ranges[optimizer] = test.search_range()
        name = f"learning_rate:{optimizer}" if optimizer is not None else "learning_rate"
        params[f"auto.{name}"] = repr(ranges[optimizer])
        params[f"auto.{name}.suggested"] = test.suggested_lr
        with tempfile.TemporaryDirectory() as folder:
            tracker.log_range_test(plan.study.name, test, plot(test, Path(folder) / "lr_find.png"))
    dimensions = {k: v for k, v in plan.study.search.space.items() if k != "learning_rate"}
    if isinstance(dimensions.get("optimizer"), Categorical):
        plan.space = conditioned_on_optimizer(dimensions, learning_rates=ranges)
    else:
        plan.space = SearchSpace({**dimensions, "learning_rate": next(iter(ranges.values()))})
    plan.strategy = make_strategy(plan.study.search, plan.space, plan.study.seed, plan.study.name)
    return params


def _study_params(plan: Plan, scoring: str) -> dict[str, Any]:
    study = plan.study
    params: dict[str, Any] = {
        "strategy": study.search.strategy, "n_trials": study.search.n_trials, "cv": study.search.cv,
        "backend": plan.backend.name,
        "scoring": scoring, "seed": study.seed, "factory": study.model.factory,
        "epochs": study.training.epochs, "batch_size": study.training.batch_size,
        "early_stopping": study.training.early_stopping.model_dump() if study.training.early_stopping else None,
        "data.source": study.data.dataset or str(study.data.path), "data.scale": study.data.scale,
    }
    if study.search.strategy == "optuna":
        params.update({"sampler": study.search.sampler, "pruner": study.search.pruner,
                       "storage": mask_credentials(study.search.storage)})
    if study.execution.parallel:
        params.update({"execution.backend": study.execution.backend, "execution.n_jobs": study.execution.n_jobs})
    params.update({f"data.{k}": v for k, v in plan.data.fingerprint().items()})
    params.update({f"model.{k}": v for k, v in study.model.params.items()})
    params.update({f"space.{k}": v for k, v in plan.space.describe().items()})
    return params


def run_study(study: StudyConfig, study_text: str, observer: TrialObserver | None = None,
              plan: Plan | None = None, worker: bool = False, started: float | None = None) -> StudyResult:
    """Run a whole study file: search on train (cv folds or the validation split), test once at the end.

    ``worker=True``: only take a share of the trials of a shared (Optuna storage) study. ``started``: when the
    command began searching, where an earlier process of it did (``search.timeout`` counts from there).
    """
    plan = plan or plan_study(study)
    plan.strategy.quota = study.execution.trials_per_process if worker else None
    observer = observer or NoObserver()
    data, fitter = plan.data, plan.fitter
    scoring, tracker = plan.scoring, plan.tracker()
    executor = make_executor(study.execution)
    search = study.search
    final = final_model(study, data.task)
    evaluator = Evaluator(plan.splits, fitter, scoring, tracker, observer, study.seed, study.training.epochs,
                          executor, Budget(search.timeout, search.patience, search.min_delta, since=started),
                          keep={"refit": 0, "best_trial": 1}.get(final, search.ensemble_size))
    validation = (data.X_valid, data.y_valid) if data.X_valid is not None else None
    auto = {}
    if wants_auto_learning_rate(study):
        tracker.check_reachable()
        auto = resolve_auto_learning_rate(plan, tracker)

    def refit(params: dict[str, Any], seed_offset: int) -> Any:
        return fitter(params, data.X_train, data.y_train, validation, study.seed + seed_offset,
                      lambda epoch, logs: False)

    with executor or contextlib.nullcontext():
        result = run_search(study.name, plan.strategy, evaluator, tracker, {**_study_params(plan, scoring), **auto},
                            study_text, None if worker else refit, test=(data.X_test, data.y_test),
                            observer=observer, report=study.tracking.report, final=final,
                            validation=validation, ensemble_size=search.ensemble_size)
    return result


def open_shared_study(plan: Plan, study_text: str) -> str:
    """Create the shared study's storage and MLflow study run before workers start, so they all join it."""
    study, tracker = plan.study, plan.tracker()
    tracker.check_reachable()
    params = _study_params(plan, plan.scoring)
    plan.strategy.prepare(trial_setup(params))
    run_id = tracker.start_study(study.name, params, study_text, resume=True,
                                 run_id=plan.strategy.shared_run_id())
    plan.strategy.share_run_id(run_id)
    return run_id

