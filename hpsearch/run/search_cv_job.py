"""One ``SearchCV.fit`` as a job: its parts assembled into :func:`~hpsearch.run.search.run_search`, here or as a
worker's share of an Optuna study in another process (``n_jobs > 1``)."""

from __future__ import annotations

import contextlib
import numbers
import pickle
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cloudpickle
from joblib import Parallel, delayed
from rich.console import Console
from sklearn.utils import _safe_indexing

from hpsearch.config.schema import ExecutionConfig, SearchConfig, tracking_uri
from hpsearch.evaluation.budget import Budget
from hpsearch.evaluation.cpus import share_of_cores
from hpsearch.evaluation.evaluator import Evaluator
from hpsearch.evaluation.execution import make_executor
from hpsearch.evaluation.fitting import EstimatorFitter, keras_step
from hpsearch.evaluation.folds import Splits
from hpsearch.evaluation.scoring import Scoring
from hpsearch.models.backend_choice import intended_backend, join_backend
from hpsearch.results import DataSplits, NoObserver, StudyResult, TrialResult, cv_results
from hpsearch.run.progress import RichObserver, TrialLines
from hpsearch.run.search import open_shared_study, run_search
from hpsearch.space.space import SearchSpace
from hpsearch.strategies import make_strategy
from hpsearch.strategies.base import Strategy
from hpsearch.tracking.base import NullTracker, Tracker


@dataclass
class SearchJob:
    """What one ``SearchCV.fit`` runs: the estimator's settings (``owner``, the SearchCV), the checked search
    settings and space, the scoring, the data with its folds and fit params, the seed."""

    owner: Any
    search: SearchConfig
    space: SearchSpace
    scoring: Scoring
    splits: Splits
    seed: int
    error_score: Any
    study_params: dict[str, Any]
    study_text: str
    epochs: int | None = None  # ``fit(epochs=)``, taken out of the fit params for successive halving to set

    def tracker(self) -> Tracker:
        if not self.owner.tracking:
            return NullTracker()
        from hpsearch.tracking.mlflow_tracker import MlflowTracker

        return MlflowTracker(tracking_uri(self.owner.tracking_uri), self.owner.experiment, self.owner.log_models)

    def strategy(self) -> Strategy:
        _, prefix = keras_step(self.owner.estimator)
        return make_strategy(self.search, self.space, self.seed, self.owner.experiment,
                             (f"{prefix}epochs", self._epochs()))

    def _epochs(self) -> int:
        """The epochs of one fit (the progress bar's length, what successive halving shares out): ``fit(epochs=...)``,
        else the wrapper's."""
        wrapper, prefix = keras_step(self.owner.estimator)
        return int(self.epochs or self.splits.fit_params.get(f"{prefix}epochs") or getattr(wrapper, "epochs", 1) or 1)

    def _choose(self) -> Any:
        """``refit`` as a callable: it picks the delivered trial from ``cv_results_``, as in ``GridSearchCV``."""
        refit = self.owner.refit
        if not callable(refit):
            return None

        def choose(trials: list[TrialResult]) -> int:
            index = refit(cv_results(trials, self.splits.n_folds, tuple(self.scoring.scorers), self.error_score,
                                     self.scoring.train))
            if not isinstance(index, numbers.Integral):
                raise TypeError("best_index_ returned is not an integer")
            if index < 0 or index >= len(trials):
                raise IndexError("best_index_ index out of range")
            return trials[int(index)].number

        return choose

    def _holdout(self) -> tuple[Any, Any] | None:
        """The test rows of a single split: where ``final="ensemble"`` chooses its members."""
        if len(self.splits.folds) != 1:
            return None
        test = self.splits.folds[0][1]
        return _safe_indexing(self.splits.X, test), _safe_indexing(self.splits.y, test)

    def run(self, execution: ExecutionConfig | None = None, worker: bool = False
            ) -> tuple[StudyResult, Strategy, list[float]]:
        """Run the study (``worker``: only take a share of an Optuna study's trials); returns its result, the
        strategy and the refit's seconds."""
        owner, splits = self.owner, self.splits
        strategy = self.strategy()
        fitter, tracker = EstimatorFitter(owner.estimator), self.tracker()
        executor = make_executor(execution) if execution is not None and self.search.strategy != "optuna" else None
        evaluator = Evaluator(splits, fitter, self.scoring, tracker, NoObserver(), self.seed, self._epochs(), executor,
                              Budget(self.search.timeout, self.search.patience, self.search.min_delta),
                              keep={"refit": 0, "best_trial": 1}.get(owner.final, owner.ensemble_size),
                              raise_errors=self.error_score == "raise")
        refit_seconds: list[float] = []

        def refit(params: dict[str, Any], seed_offset: int) -> Any:
            started = time.perf_counter()
            model = fitter(params, splits.X, splits.y, None, self.seed + seed_offset, lambda epoch, logs: False,
                           **splits.fit_params)
            refit_seconds.append(time.perf_counter() - started)
            return model

        with executor or contextlib.nullcontext(), _observer(0 if worker else owner.verbose) as observer:
            evaluator.observer = observer
            result = run_search(owner.experiment, strategy, evaluator, tracker, self.study_params, self.study_text,
                                None if owner.refit is False else refit, observer=observer, final=owner.final,
                                validation=self._holdout(), ensemble_size=owner.ensemble_size,
                                datasets=DataSplits(owner.experiment, None, {"training": (splits.X, splits.y)},
                                                    trial_roles=("training",)),
                                worker=worker, choose=self._choose())
        return result, strategy, refit_seconds


@contextlib.contextmanager
def _observer(verbose: int) -> Iterator[Any]:
    """What the search shows: nothing (0), rich progress bars (1), a line per trial (2 and more)."""
    if verbose <= 0:
        yield NoObserver()
    elif verbose == 1:
        with RichObserver(Console()) as bars:
            yield bars
    else:
        yield TrialLines(Console())


@contextlib.contextmanager
def shared_storage(storage: str | None) -> Iterator[str]:
    """``storage``, or a temporary SQLite file (deleted afterwards) for the workers of an in-memory study."""
    if storage is not None:
        yield storage
        return
    folder = tempfile.mkdtemp(prefix="hpsearch-searchcv-")
    try:
        yield f"sqlite:///{folder}/optuna.db"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_workers(job: SearchJob, n_jobs: int) -> None:
    """``n_jobs`` local processes each take a share of the job's Optuna study (in ``job.search.storage``), as
    ``hpsearch run --workers`` does: the study and its MLflow study run are opened here first, so that they all
    join them."""
    open_shared_study(job.owner.experiment, job.strategy(), job.tracker(), job.study_params, job.study_text)
    payload = cloudpickle.dumps(job)
    threads = share_of_cores(n_jobs)
    Parallel(n_jobs=n_jobs, backend="loky")(delayed(_share)(intended_backend(), threads, payload)
                                            for _ in range(n_jobs))


def _share(backend: str | None, threads: int, payload: bytes) -> int:
    """One worker process's share of the study: Keras on the study's backend first, then the job (whose
    estimator imports Keras) unpickled and run. Returns the trials it ran."""
    refused = join_backend(backend)
    if refused:
        raise RuntimeError(refused)
    from hpsearch.models.backend import limit_threads

    limit_threads(threads)
    job: SearchJob = pickle.loads(payload)
    result, _, _ = job.run(worker=True)
    return len(result.trials)
