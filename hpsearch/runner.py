"""One path through a study: validate everything, then search, refit the best, test it once, record it.

Both doors (the CLI and the Python API) call :func:`run_study`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpsearch.config import StudyConfig
from hpsearch.data import Dataset, load_dataset
from hpsearch.errors import ConfigError, mask_credentials
from hpsearch.evaluation import Evaluator
from hpsearch.models.estimator import check_params, resolve_factory
from hpsearch.results import NoObserver, StudyResult, TrialObserver
from hpsearch.space import SearchSpace
from hpsearch.strategies import Strategy, make_strategy


@dataclass
class Plan:
    """A validated study, ready to run: nothing has been written anywhere yet."""

    study: StudyConfig
    data: Dataset
    factory: Any
    space: SearchSpace
    strategy: Strategy

    @property
    def n_candidates(self) -> int:
        return self.strategy.planned_trials()


def plan_study(study: StudyConfig) -> Plan:
    """Load the data and check the factory, params and space; raise user errors before any write."""
    if study.data.scale != "none" and study.data.dataset == "fashion_mnist":
        raise ConfigError("images need data.scale: none (pixels are already scaled to [0, 1])", field="data.scale")
    data = load_dataset(study.data, study.seed)
    if study.data.scale != "none" and data.X_train.ndim > 2:
        raise ConfigError(f"data.scale: {study.data.scale} needs tabular features; these have shape "
                          f"{data.X_train.shape[1:]}; use scale: none", field="data.scale")
    factory = resolve_factory(study.model.factory)
    check_params(factory, list(study.model.params), "model.params")
    check_params(factory, list(study.search.space), "search.space")
    space = SearchSpace(study.search.space)
    strategy = make_strategy(study.search, space, study.seed, study.name)
    return Plan(study, data, factory, space, strategy)


def _study_params(plan: Plan, scoring: str) -> dict[str, Any]:
    study = plan.study
    params: dict[str, Any] = {
        "strategy": study.search.strategy, "n_trials": study.search.n_trials, "cv": study.search.cv,
        "scoring": scoring, "seed": study.seed, "factory": study.model.factory,
        "epochs": study.training.epochs, "batch_size": study.training.batch_size,
        "early_stopping": study.training.early_stopping.model_dump() if study.training.early_stopping else None,
        "data.source": study.data.dataset or str(study.data.path), "data.scale": study.data.scale,
    }
    if study.search.strategy == "optuna":
        params.update({"sampler": study.search.sampler, "pruner": study.search.pruner,
                       "storage": mask_credentials(study.search.storage)})
    params.update({f"data.{k}": v for k, v in plan.data.fingerprint().items()})
    params.update({f"model.{k}": v for k, v in study.model.params.items()})
    params.update({f"space.{k}": v for k, v in plan.space.describe().items()})
    return params


def run_study(study: StudyConfig, study_text: str, observer: TrialObserver | None = None,
              plan: Plan | None = None) -> StudyResult:
    """Run a whole study and return its results (the refit best model included)."""
    from hpsearch.tracking import MlflowTracker

    plan = plan or plan_study(study)
    observer = observer or NoObserver()
    tracker = MlflowTracker(study.tracking.resolved_uri(), study.experiment_name, study.tracking.log_models)
    tracker.check_reachable()
    evaluator = Evaluator(study, plan.data, plan.factory, tracker, observer)
    plan.strategy.prepare()
    observer.search_started(plan.strategy.planned_trials())
    study_run = tracker.start_study(study.name, _study_params(plan, evaluator.scoring), study_text,
                                    resume=plan.strategy.resumes())
    try:
        trials = plan.strategy.study_results(plan.strategy.run_search(evaluator))
        result = StudyResult(study.name, trials, evaluator.scoring, study_run_id=study_run,
                             experiment_id=tracker.experiment_id, tracking_uri=tracker.tracking_uri)
        if result.best is not None:
            data = plan.data
            validation = (data.X_valid, data.y_valid) if data.X_valid is not None else None
            result.best_estimator = evaluator.fit(result.best.params, data.X_train, data.y_train, validation,
                                                  study.seed)
            result.test_score = evaluator.score(result.best_estimator, data.X_test, data.y_test)
    except BaseException as exc:  # Ctrl-C or a bug: close the MLflow runs, never leave them RUNNING
        interrupted = isinstance(exc, KeyboardInterrupt)
        tracker.abort("interrupted (Ctrl-C)" if interrupted else f"{type(exc).__name__}: {exc}",
                      status="KILLED" if interrupted else "FAILED")
        raise
    tracker.end_study(result, {"tracking_uri": mask_credentials(tracker.tracking_uri)},
                      status="FINISHED" if result.best is not None else "FAILED")
    return result
