"""What a search produces: one record per trial and one per study (plain data, no engines)."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from scipy.stats import rankdata

TrialState = Literal["finished", "pruned", "failed"]


@dataclass
class TrialResult:
    """One candidate's outcome: its params, per-fold scores and curves, and how it ended."""

    number: int
    params: dict[str, Any]
    state: TrialState = "finished"
    fold_scores: list[float] = field(default_factory=list)
    fold_epochs: list[int] = field(default_factory=list)
    fit_seconds: list[float] = field(default_factory=list)
    score_seconds: list[float] = field(default_factory=list)
    duration_s: float = 0.0
    reason: str | None = None
    run_id: str | None = None
    fold_metrics: list[dict[str, float]] = field(default_factory=list)  # val_mse, val_accuracy, ... per fold
    fold_all_scores: list[dict[str, float]] = field(default_factory=list)  # every metric of a multi-metric scoring
    fold_train_scores: list[dict[str, float]] = field(default_factory=list)  # on the fold's training rows, if asked

    @property
    def score(self) -> float:
        """Mean score over folds (greater is better); NaN unless every fold finished."""
        if self.state != "finished" or not self.fold_scores:
            return math.nan
        return sum(self.fold_scores) / len(self.fold_scores)

    @property
    def score_std(self) -> float:
        if self.state != "finished" or not self.fold_scores:
            return math.nan
        mean = self.score
        return math.sqrt(sum((s - mean) ** 2 for s in self.fold_scores) / len(self.fold_scores))

    def mean_scores(self, train: bool = False) -> dict[str, float]:
        """Each metric of a multi-metric scoring (``train``: the training rows' scores) as its mean over folds;
        empty unless the trial finished and measured them."""
        per_fold = self.fold_train_scores if train else self.fold_all_scores
        if self.state != "finished" or not any(per_fold):
            return {}
        return {name: float(np.mean([scores[name] for scores in per_fold])) for name in per_fold[0]}

    @property
    def val_metrics(self) -> dict[str, float]:
        """The named validation metrics (``val_mse``, ``val_accuracy``, ...), each the mean over the folds that
        have it; empty unless the trial finished."""
        if self.state != "finished":
            return {}
        names = {name for metrics in self.fold_metrics for name in metrics}
        return {name: float(np.mean([m[name] for m in self.fold_metrics if name in m])) for name in sorted(names)}


@dataclass
class FoldResult:
    """One fitted and scored (candidate, fold) pair: what a resumed random/grid search need not refit."""

    fold: int
    score: float
    epochs: int
    fit_seconds: float
    score_seconds: float
    metrics: dict[str, float] = field(default_factory=dict)  # val_mse, val_accuracy, ... (evaluation.metrics)
    scores: dict[str, float] = field(default_factory=dict)  # every metric of a multi-metric scoring, by name
    train_scores: dict[str, float] = field(default_factory=dict)  # on the training rows (return_train_score)


class FoldLedger(Protocol):
    """Where finished (candidate, fold) pairs are recorded, so that a re-run skips them."""

    def folds(self, number: int) -> dict[int, FoldResult]: ...
    def record_fold(self, number: int, result: FoldResult) -> None: ...
    def start_trial(self, number: int, params: dict[str, Any]) -> None: ...
    def end_trial(self, result: TrialResult) -> None: ...


@dataclass(frozen=True)
class DataSplits:
    """The data a study searched on, as its tracker records it: a name, where the data came from (a file's path;
    None for data handed over in code or a builtin dataset), the column names, each split's (X, y) by its role
    (``training``, ``validation``, ``test``), and the roles a trial uses (``training`` alone when the trials
    cross-validate on it)."""

    name: str
    source: str | None
    splits: dict[str, tuple[Any, Any]]
    feature_names: tuple[str, ...] = ()
    target_names: tuple[str, ...] = ()
    trial_roles: tuple[str, ...] = ("training", "validation")


@dataclass
class StudyResult:
    """All trials of a study, the best one, and the refit best model's held-out test score."""

    name: str
    trials: list[TrialResult]
    scoring: str
    test_score: float | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)  # test_mse, test_accuracy, ...
    study_run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    best_estimator: Any = None
    stopped_by: str | None = None  # the budget that ended the search early (search.timeout / search.patience)
    # how the delivered model was made: "best_trial" (the trial's own model), "refit", "ensemble"
    final: str | None = None
    ensemble: dict[int, int] | None = None  # the ensemble's members: trial number -> weight
    final_valid_score: float | None = None  # the delivered model's score on the validation split
    search_started: float | None = None  # time.time() when the search began (in this process or the one before it)
    model_lost: str | None = None  # why the delivered model could not be saved in MLflow (a full artifact disk)
    chosen: int | None = None  # the trial chosen as the best by another rule than its score (SearchCV's refit)

    @property
    def finished(self) -> list[TrialResult]:
        return [t for t in self.trials if t.state == "finished" and math.isfinite(t.score)]

    @property
    def best(self) -> TrialResult | None:
        """The chosen trial, else the finished trial with the greatest score."""
        if self.chosen is not None:
            return next(t for t in self.trials if t.number == self.chosen)
        return max(self.finished, key=lambda t: t.score, default=None)

    def failure_counts(self) -> Counter:
        """Failed trials counted by reason; reasons that differ only in their numbers ("NaN at epoch 3",
        "NaN at epoch 7") count as one, with ``N`` for the numbers ("NaN at epoch N")."""
        reasons = [t.reason or "unknown" for t in self.trials if t.state == "failed"]
        kinds = [re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", reason) for reason in reasons]
        per_kind = Counter(kinds)
        return Counter(reason if per_kind[kind] == 1 else kind for reason, kind in zip(reasons, kinds))

    def trials_table(self) -> dict[str, list[Any]]:
        """Every trial as one row (number, state, score, std, the ``val_`` metrics, epochs, duration, reason, then
        each param)."""
        names = sorted({name for trial in self.trials for name in trial.params})
        trials = sorted(self.trials, key=lambda t: t.number)
        validations = [trial.val_metrics for trial in trials]  # each trial's means over folds, computed once
        metrics = sorted({name for validation in validations for name in validation})
        table: dict[str, list[Any]] = {column: [] for column in (
            "trial", "state", "score", "score_std", *metrics, "epochs", "duration_s", "reason", *names)}
        for trial, validation in zip(trials, validations):
            values = [trial.number, trial.state, trial.score, trial.score_std,
                      *[validation.get(name, math.nan) for name in metrics],
                      max(trial.fold_epochs, default=0), round(trial.duration_s, 3), trial.reason or ""]
            values += [_cell(trial.params.get(name)) for name in names]
            for column, value in zip(table, values):
                table[column].append(value)
        return table


def params_text(params: dict[str, Any]) -> str:
    """``n_hidden=2, learning_rate=0.003162``: params as people read them (floats to 4 significant digits)."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _cell(value: Any) -> Any:
    """A param as a table cell: numbers and text as they are, anything else as text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


class TrialObserver(Protocol):
    """Progress display hooks the evaluator calls (rich bars in the CLI, nothing in the library)."""

    def search_started(self, n_trials: int) -> None: ...
    def trial_started(self, number: int, n_folds: int, epochs: int) -> None: ...
    def epoch_ended(self, fold: int, epoch: int, logs: dict[str, float]) -> None: ...
    def trial_ended(self, result: TrialResult) -> None: ...


class PruningReporter(Protocol):
    """How a strategy that prunes (Optuna) hears intermediate values: greater is better."""

    def should_prune(self, value: float, step: int) -> bool: ...


class NoObserver:
    """A TrialObserver that shows nothing."""

    def search_started(self, n_trials: int) -> None:
        pass

    def trial_started(self, number: int, n_folds: int, epochs: int) -> None:
        pass

    def epoch_ended(self, fold: int, epoch: int, logs: dict[str, float]) -> None:
        pass

    def trial_ended(self, result: TrialResult) -> None:
        pass


def cv_results(trials: list[TrialResult], n_splits: int, metrics: tuple[str, ...] = ("score",),
               error_score: float = math.nan, train: bool = False) -> dict[str, Any]:
    """Trials in scikit-learn's ``cv_results_`` format: ``split<k>_test_<metric>``, ``mean_``, ``std_`` and
    ``rank_test_<metric>`` per metric (``metrics``: the names of a multi-metric scoring, else ``score``), and the
    ``_train_`` ones with ``train``. Failed trials score ``error_score``; pruned ones NaN; NaN ranks last."""
    names = sorted({name for t in trials for name in t.params})
    results: dict[str, Any] = {"params": [t.params for t in trials]}
    for name in names:
        results[f"param_{name}"] = np.ma.MaskedArray([t.params.get(name) for t in trials],
                                                     mask=[name not in t.params for t in trials], dtype=object)
    for key, attribute in (("fit_time", "fit_seconds"), ("score_time", "score_seconds")):
        values = [getattr(t, attribute) for t in trials]
        results[f"mean_{key}"] = np.array([np.mean(v) if v else np.nan for v in values])
        results[f"std_{key}"] = np.array([np.std(v) if v else np.nan for v in values])
    for side in ("test", "train") if train else ("test",):
        for metric in metrics:
            splits = np.array([_split_scores(t, side, metric, n_splits, error_score) for t in trials]).reshape(
                len(trials), max(n_splits, 1))
            for k in range(max(n_splits, 1)):
                results[f"split{k}_{side}_{metric}"] = splits[:, k]
            results[f"mean_{side}_{metric}"] = splits.mean(axis=1)
            results[f"std_{side}_{metric}"] = splits.std(axis=1)
            if side == "test":
                means = results[f"mean_test_{metric}"]
                worst = np.nanmin(means) - 1 if np.isfinite(means).any() else 0.0
                results[f"rank_test_{metric}"] = rankdata(-np.nan_to_num(means, nan=worst), method="min").astype(
                    np.int32)
    results["state"] = np.array([t.state for t in trials], dtype=object)
    return results


def _split_scores(trial: TrialResult, side: str, metric: str, n_splits: int, error_score: float) -> list[float]:
    """One trial's ``metric`` on each fold's test (or train) rows: ``error_score`` if it failed, NaN if pruned."""
    n_splits = max(n_splits, 1)
    if trial.state == "failed":
        return [error_score] * n_splits
    if trial.state != "finished":
        return [math.nan] * n_splits
    if side == "test" and metric == "score" and not any(trial.fold_all_scores):
        return list(trial.fold_scores)
    per_fold = trial.fold_all_scores if side == "test" else trial.fold_train_scores
    return [scores.get(metric, math.nan) for scores in per_fold] or [math.nan] * n_splits
