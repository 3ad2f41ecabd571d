"""Evaluate one candidate: fit it on every fold (or the holdout split), score it, track it.

This is the "tuner" half of KerasTuner's oracle/tuner split: strategies only propose params and
hear back :class:`~hpsearch.results.TrialResult` objects (scikit-learn's ``evaluate_candidates``)."""

from __future__ import annotations

import math
import pickle
import time
from dataclasses import dataclass, field, fields
from typing import Any

import cloudpickle

from hpsearch.errors import TrackingError, TrialFailed
from hpsearch.evaluation.budget import STOPPED_AT_DEADLINE, Budget
from hpsearch.evaluation.execution import Executor
from hpsearch.evaluation.fitting import Fitter
from hpsearch.evaluation.folds import Splits
from hpsearch.evaluation.metrics import validation_metrics
from hpsearch.evaluation.scoring import Scoring, named_scoring
from hpsearch.models.backend_choice import intended_backend, join_backend
from hpsearch.results import FoldLedger, FoldResult, PruningReporter, TrialObserver, TrialResult
from hpsearch.strategies.evaluate import one_by_one
from hpsearch.tracking.layout import fold_prefix, resumed_folds


@dataclass
class FoldTask:
    """One (candidate, fold) fit, self-contained so that another process or machine can run it."""

    fitter: Fitter
    splits: Splits
    scoring: Scoring
    params: dict[str, Any]
    number: int
    fold: int
    seed: int
    keep_model: bool
    deadline: float | None = None  # time.time() at which the search's budget ends: the fit stops there
    backend: str | None = field(default_factory=intended_backend)  # the study's Keras backend, for the worker
    refused: str | None = None  # why the process it arrived in cannot train it (another Keras backend)
    raise_errors: bool = False  # a failing fit raises (``error_score="raise"``) instead of failing the trial

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Unpickled in a worker, the task first puts Keras on the study's backend, then loads its fitter (whose
        factory's module imports Keras, fixing the backend)."""
        payload = cloudpickle.dumps({f.name: getattr(self, f.name) for f in fields(self)})
        return _arrive, (self.backend, self.number, payload)


def _arrive(backend: str | None, number: int, payload: bytes) -> FoldTask:
    """A :class:`FoldTask` rebuilt in a worker process on the study's Keras backend (or refused, saying why)."""
    refused = join_backend(backend)
    if refused:
        return FoldTask(None, Splits(None, None), Scoring({}), {}, number, 0, 0, False, backend=backend,
                        refused=refused)
    return FoldTask(**pickle.loads(payload))


@dataclass
class FoldOutcome:
    """What a :class:`FoldTask` sends back: the fold's result and curves, or why it failed."""

    number: int
    result: FoldResult | None = None
    curves: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    model: Any = None
    error: str | None = None
    stopped: bool = False  # the fit was stopped at the deadline
    skipped: bool = False  # never started: the deadline had passed


def failure_reason(exc: BaseException) -> str:
    """``Type: first line of the message`` (what a failed trial's ``hpsearch.reason`` says)."""
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message.splitlines()[0] if message else ''}"


def checked_scores(scoring: Scoring, model: Any, X: Any, y: Any) -> dict[str, float]:
    """Every metric of ``scoring`` on (X, y); a NaN/inf primary score fails the trial."""
    values = scoring(model, X, y)
    if not math.isfinite(values[scoring.primary]):
        raise TrialFailed(f"the {scoring.label} score is {values[scoring.primary]}")
    return values


def fit_fold(task: FoldTask, hook: _CurveHook | _Recorder) -> tuple[Any, bool]:
    """Fit and score one fold; returns (model, pruned) and sets ``hook.result`` unless pruned."""
    X_fit, y_fit, fit_params, X_score, y_score, validation = task.splits.fold(task.fold)
    started = time.perf_counter()
    model = task.fitter(task.params, X_fit, y_fit, validation, task.seed, hook, **fit_params)
    fit_seconds, epochs = time.perf_counter() - started, hook.epochs
    if hook.pruned:
        return model, True
    started = time.perf_counter()
    scores = checked_scores(task.scoring, model, X_score, y_score)
    score_seconds = time.perf_counter() - started
    hook.result = FoldResult(task.fold, scores[task.scoring.primary], epochs, fit_seconds, score_seconds,
                             validation_metrics(model, X_score, y_score),
                             scores=scores if task.scoring.multimetric else {},
                             train_scores=task.scoring(model, X_fit, y_fit) if task.scoring.train else {})
    return model, False


class _Recorder:
    """The per-epoch hook of a fold fitted elsewhere: keeps the curves to send back, stops at the deadline."""

    def __init__(self, deadline: float | None) -> None:
        self.curves: list[tuple[int, dict[str, float]]] = []
        self.epochs, self.pruned, self.result, self.deadline = 0, False, None, deadline

    def __call__(self, epoch: int, logs: dict[str, float]) -> bool:
        self.epochs = epoch + 1
        self.curves.append((epoch, dict(logs)))
        self.pruned = self.deadline is not None and time.time() >= self.deadline
        return self.pruned


def run_fold_task(task: FoldTask) -> FoldOutcome:
    """Run one :class:`FoldTask` (in a joblib/Dask worker); never raises for a failing candidate."""
    if task.deadline is not None and time.time() >= task.deadline:
        return FoldOutcome(task.number, skipped=True)
    if task.refused:
        return FoldOutcome(task.number, error=task.refused)
    recorder = _Recorder(task.deadline)
    try:
        model, stopped = fit_fold(task, recorder)
    except Exception as exc:
        if task.raise_errors:
            raise
        return FoldOutcome(task.number, curves=recorder.curves, error=failure_reason(exc))
    if stopped:
        return FoldOutcome(task.number, curves=recorder.curves, stopped=True)
    return FoldOutcome(task.number, recorder.result, recorder.curves, model if task.keep_model else None)


class Evaluator:
    """Fits, scores and records candidates; never raises for a failing candidate.

    ``executor`` (see :mod:`hpsearch.evaluation.execution`) runs :meth:`many`'s folds in other processes or on a
    Dask cluster; without one, everything runs here with live curves and progress. ``scoring``: a scorer's name
    (study files) or a :class:`~hpsearch.evaluation.scoring.Scoring` (several metrics, train scores).
    ``raise_errors``: a failing candidate raises its exception (``error_score="raise"``) instead.
    """

    def __init__(self, splits: Splits, fitter: Fitter, scoring: str | Scoring, tracker: Any,
                 observer: TrialObserver, seed: int, epochs: int, executor: Executor | None = None,
                 budget: Budget | None = None, keep: int = 1, raise_errors: bool = False) -> None:
        self.splits, self.fitter = splits, fitter
        self.scorers = named_scoring(scoring) if isinstance(scoring, str) else scoring
        self.scoring = self.scorers.label  # the primary scorer's name, as the study records it
        self.raise_errors = raise_errors
        self.tracker, self.observer, self.seed, self.epochs = tracker, observer, seed, epochs
        self.executor = executor
        self.budget = budget or Budget()
        self.keep = keep
        self._kept: list[tuple[TrialResult, Any]] = []  # the best ``keep`` trials run here, with their models

    def kept_model(self, number: int) -> Any:
        """The model of trial ``number`` if it is among the best trials this evaluator ran and kept (else None)."""
        return next((model for result, model in self._kept if result.number == number), None)

    def score(self, model: Any, X: Any, y: Any) -> float:
        """The primary score of ``model`` on (X, y) (NaN/inf fails: :class:`TrialFailed`)."""
        primary = Scoring({self.scorers.primary: self.scorers.scorer}, self.scorers.primary, self.scorers.label)
        return checked_scores(primary, model, X, y)[primary.primary]

    def _task(self, params: dict[str, Any], number: int, fold: int) -> FoldTask:
        return FoldTask(self.fitter, self.splits, self.scorers, params, number, fold,
                        self.seed + 7919 * number + fold, keep_model=fold == 0, deadline=self.budget.deadline,
                        raise_errors=self.raise_errors)

    def __call__(self, params: dict[str, Any], number: int, reporter: PruningReporter | None = None,
                 ledger: FoldLedger | None = None) -> TrialResult:
        """Evaluate one candidate here and now; folds the ledger holds are not refitted."""
        known = ledger.folds(number) if ledger else {}
        result = TrialResult(number=number, params=params)
        run = self.tracker.start_trial(number, params)
        if ledger:
            ledger.start_trial(number, params)
        if known:
            run.set_tags(resumed_folds(list(known)))
        self.observer.trial_started(number, self.splits.n_folds, self.epochs)
        started, first_model, hooks = time.perf_counter(), None, []
        for fold in range(self.splits.n_folds):
            if fold in known:
                _add_fold(result, known[fold])
                continue
            hook = _CurveHook(self, run, fold, reporter)
            hooks.append(hook)
            try:
                model, pruned = fit_fold(self._task(params, number, fold), hook)
            except TrackingError:  # the storage failed while the trial reported its progress: not the candidate
                raise
            except Exception as exc:  # a failing candidate must not stop the study
                if self.raise_errors:
                    raise
                result.state, result.reason, first_model = "failed", failure_reason(exc), None
                break
            first_model = first_model if first_model is not None else model
            if pruned:
                result.fold_epochs.append(hook.epochs)
                why = STOPPED_AT_DEADLINE if hook.stopped else "pruned"
                result.state, result.reason = "pruned", f"{why} at epoch {hook.epochs} of fold {fold}"
                break
            _add_fold(result, hook.result)
            if ledger:  # a failing storage is not the candidate's failure: its TrackingError stops the study
                ledger.record_fold(number, hook.result)
        result.duration_s = time.perf_counter() - started
        if self.splits.folds:
            _log_mean_curves(run, [hook.curves for hook in hooks])
        self._end(run, result, first_model, ledger)
        return result

    def _end(self, run: Any, result: TrialResult, model: Any, ledger: FoldLedger | None) -> None:
        self.budget.record(result)
        if model is not None and result.state == "finished" and math.isfinite(result.score) and self.keep:
            self._kept = sorted([*self._kept, (result, model)], key=lambda kept: -kept[0].score)[:self.keep]
        self.tracker.end_trial(run, result, model=model)
        if ledger:
            ledger.end_trial(result)
        self.observer.trial_ended(result)

    def many(self, candidates: list[tuple[int, dict[str, Any]]], ledger: FoldLedger | None = None
             ) -> list[TrialResult]:
        """Evaluate a batch until the budget ends; with an executor, every missing (candidate, fold) pair runs in
        parallel. Returns the trials that ran (and were recorded), in the candidates' order."""
        if self.executor is None:
            return one_by_one(self, candidates, ledger)
        params_of = dict(candidates)
        done = {number: dict(ledger.folds(number) if ledger else {}) for number in params_of}
        outcomes: dict[int, list[FoldOutcome]] = {number: [] for number in params_of}
        tasks = [self._task(params, number, fold) for number, params in candidates
                 for fold in range(self.splits.n_folds) if fold not in done[number]]
        results = {number: self._record(number, params_of[number], done[number], [], ledger)
                   for number in params_of if len(done[number]) == self.splits.n_folds}
        for outcome in self.executor.map_unordered(run_fold_task, tasks):
            number = outcome.number
            if outcome.skipped or number not in outcomes:  # not started at the deadline: not a trial
                outcomes.pop(number, None)
                continue
            outcomes[number].append(outcome)
            if outcome.result is not None:
                done[number][outcome.result.fold] = outcome.result
                if ledger:
                    ledger.record_fold(number, outcome.result)
            ended = sum(o.error is not None or o.stopped for o in outcomes[number])
            if len(done[number]) + ended == self.splits.n_folds:
                results[number] = self._record(number, params_of[number], done[number], outcomes[number], ledger)
                if self.budget.patience is not None and self.budget.exhausted():
                    break  # patience ran out: the fits still queued are left
        return [results[number] for number, _ in candidates if number in results]

    def _record(self, number: int, params: dict[str, Any], folds: dict[int, FoldResult],
                outcomes: list[FoldOutcome], ledger: FoldLedger | None = None) -> TrialResult:
        """Track a trial whose folds ran elsewhere: its curves, scores and first fold's model."""
        result = TrialResult(number=number, params=params)
        for fold in sorted(folds):
            _add_fold(result, folds[fold])
        errors = [o.error for o in outcomes if o.error is not None]
        if errors:
            result.state, result.reason = "failed", errors[0]
        elif any(o.stopped for o in outcomes):
            result.state, result.reason = "pruned", STOPPED_AT_DEADLINE
        result.duration_s = sum(result.fit_seconds) + sum(result.score_seconds)
        self.observer.trial_started(number, self.splits.n_folds, self.epochs)
        run = self.tracker.start_trial(number, params)
        resumed = sorted(set(folds) - {o.result.fold for o in outcomes if o.result})
        if resumed:
            run.set_tags(resumed_folds(resumed))
        for outcome in sorted(outcomes, key=lambda o: o.result.fold if o.result else -1):
            prefix = fold_prefix(outcome.result.fold, bool(self.splits.folds)) if outcome.result else ""
            for epoch, logs in outcome.curves:
                run.log_metrics({prefix + k: v for k, v in logs.items()}, step=epoch)
        if self.splits.folds:
            _log_mean_curves(run, [outcome.curves for outcome in outcomes])
        model = next((o.model for o in outcomes if o.model is not None), None)
        self._end(run, result, None if errors else model, ledger)
        return result


def _log_mean_curves(run: Any, per_fold: list[list[tuple[int, dict[str, float]]]]) -> None:
    """Under cross-validation: each curve's mean over the folds that reached the epoch, under Keras' own name, so
    that MLflow's charts overlay every trial's ``val_loss`` (the ``fold<k>/`` curves stay as they are)."""
    values: dict[int, dict[str, list[float]]] = {}
    for curves in per_fold:
        for epoch, logs in curves:
            for name, value in logs.items():
                values.setdefault(epoch, {}).setdefault(name, []).append(value)
    for epoch in sorted(values):
        run.log_metrics({name: sum(seen) / len(seen) for name, seen in values[epoch].items()}, step=epoch)


def _add_fold(result: TrialResult, fold: FoldResult) -> None:
    result.fold_scores.append(fold.score)
    result.fold_all_scores.append(fold.scores)
    result.fold_train_scores.append(fold.train_scores)
    result.fold_metrics.append(fold.metrics)
    result.fold_epochs.append(fold.epochs)
    result.fit_seconds.append(fold.fit_seconds)
    result.score_seconds.append(fold.score_seconds)


class _CurveHook:
    """Per-epoch: curves to the tracker, progress to the observer, intermediate values to the pruner."""

    def __init__(self, evaluator: Evaluator, run: Any, fold: int, reporter: PruningReporter | None) -> None:
        self.evaluator, self.run, self.fold, self.reporter = evaluator, run, fold, reporter
        self.prefix = fold_prefix(fold, bool(evaluator.splits.folds))
        self.epochs, self.pruned, self.stopped, self.result = 0, False, False, None
        self.curves: list[tuple[int, dict[str, float]]] = []  # for the mean over folds (kept under cv only)

    def __call__(self, epoch: int, logs: dict[str, float]) -> bool:
        self.epochs = epoch + 1
        if self.prefix:
            self.curves.append((epoch, dict(logs)))
        self.run.log_metrics({self.prefix + k: v for k, v in logs.items()}, step=epoch)
        self.evaluator.observer.epoch_ended(self.fold, epoch, logs)
        if self.evaluator.budget.past_deadline():
            self.stopped = self.pruned = True
            return True
        if self.reporter is None:
            return False
        monitored = logs.get("val_loss", logs.get("loss", math.nan))
        if not math.isfinite(monitored):
            return False
        step = self.fold * self.evaluator.epochs + epoch
        try:
            self.pruned = self.reporter.should_prune(-monitored, step)
        except Exception as exc:  # the pruner's storage failed
            raise TrackingError(f"cannot report trial progress to search.storage: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        return self.pruned
