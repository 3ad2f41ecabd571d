"""A study file made ready to run: data loaded, factory, params and space checked, the backend and the
strategy chosen; every user error is raised here, before anything is written."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sklearn.base import is_classifier

from hpsearch.config.schema import StudyConfig
from hpsearch.config.stores import check_stores
from hpsearch.data.loading import Dataset, load_dataset
from hpsearch.errors import ConfigError, mask_credentials
from hpsearch.evaluation.fitting import StudyFitter
from hpsearch.evaluation.folds import DEFAULT_SCORING, Splits, make_folds
from hpsearch.evaluation.metrics import fitting_scorers, scorer_problem
from hpsearch.models.backend_choice import BackendChoice, choose_backend, use_backend
from hpsearch.models.estimator import check_params, resolve_factory
from hpsearch.results import DataSplits
from hpsearch.space.dimensions import Categorical, Fixed
from hpsearch.space.space import SearchSpace, conditioned_on_optimizer
from hpsearch.strategies import make_strategy
from hpsearch.strategies.base import Strategy
from hpsearch.tracking.base import NullTracker, Tracker


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
        from hpsearch.tracking.mlflow_tracker import MlflowTracker

        return MlflowTracker(tracking.resolved_uri(), self.study.experiment_name, tracking.log_models,
                             system_metrics=tracking.system_metrics)


def plan_study(study: StudyConfig) -> Plan:
    """Load the data and check the stores, factory, params and space; raise user errors before any write."""
    check_stores(study)
    if study.data.scale != "none" and study.data.dataset == "fashion_mnist":
        raise ConfigError("images need data.scale: none (pixels are already scaled to [0, 1])", field="data.scale")
    data = load_dataset(study.data, study.seed if study.data.seed is None else study.data.seed)
    if study.data.scale != "none" and data.X_train.ndim > 2:
        raise ConfigError(f"data.scale: {study.data.scale} needs tabular features; these have shape "
                          f"{data.X_train.shape[1:]}; use scale: none", field="data.scale")
    _check_final(study, data.task)
    _check_scoring(study.search.scoring, data.task, data.y_train)
    backend = choose_backend(study.training.backend, study.model.factory, _steps_per_fit(study, len(data.X_train)))
    use_backend(backend.name)  # before anything imports Keras (the user's factory module may)
    factory = resolve_factory(study.model.factory)
    check_params(factory, list(study.model.params), "model.params")
    check_params(factory, list(study.search.space), "search.space")
    if study.model.factory == "mlp":
        from hpsearch.models.mlp import check_mlp_names  # Keras: only once the backend is chosen

        check_mlp_names(study.model.params, study.search.space)
    fitter = StudyFitter(study, factory, data.task)
    cv = study.search.cv
    folds = make_folds(data.X_train, data.y_train, cv, is_classifier(fitter.new_estimator({}))) if cv else []
    splits = Splits(data.X_train, data.y_train, folds, data.X_valid, data.y_valid)
    space = conditioned_on_optimizer(study.search.space)
    space.check_strategy(study.search.strategy)
    strategy = make_strategy(study.search, space, study.seed, study.name, ("epochs", study.training.epochs))
    return Plan(study, data, fitter, space, strategy, splits, backend)


def check_factory_builds(plan: Plan, rows: int = 32) -> int:
    """Build a user's factory once on ``rows`` training rows (one epoch) for each categorical value in the space,
    the others at a representative value (``hpsearch check``); a value it cannot build with is refused, naming its
    field. Returns how many models were built."""
    study, X, y = plan.study, plan.data.X_train[:rows], plan.data.y_train[:rows]
    representative = {k: v for k, v in plan.space.defaults().items() if v != "auto"}  # learning_rate: auto
    tries = [("model.params", {})] + [(f"search.space.{name}", {name: choice})
                                      for name, dim in study.search.space.items() if isinstance(dim, Categorical)
                                      for choice in dim.choices]
    for field, params in tries:
        try:
            plan.fitter.new_estimator({**representative, **params}).set_params(epochs=1, verbose=0).fit(X, y)
        except Exception as exc:
            value = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "the fixed params"
            detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise ConfigError(f"{study.model.factory} cannot build and train a model with {value} on {rows} rows: "
                              f"{type(exc).__name__}: {detail}", field=field) from None
    return len(tries)


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


def _check_scoring(scoring: str | None, task: str, y: Any) -> None:
    problem = scoring and scorer_problem(scoring, task, y)
    if problem:
        raise ConfigError(f"{scoring!r} cannot score this study: {problem}; the scorers that fit a {task} task "
                          f"here: {', '.join(fitting_scorers(task, y))}", field="search.scoring")


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


def data_splits(plan: Plan) -> DataSplits:
    """The study's splits as its tracker records them (MLflow datasets): training, validation, test; the trials
    use the training split (their folds, under cross-validation) and, under holdout, the validation split."""
    data, config = plan.data, plan.study.data
    splits = {"training": (data.X_train, data.y_train)}
    if data.X_valid is not None:
        splits["validation"] = (data.X_valid, data.y_valid)
    splits["test"] = (data.X_test, data.y_test)
    source = None if config.dataset else str(Path(config.path).resolve())  # None: MLflow names the code (hpsearch)
    roles = ("training",) if plan.study.search.cv else ("training", "validation")
    return DataSplits(config.dataset or Path(config.path).stem, source, splits, data.feature_names, data.target_names,
                      roles)


def study_params(plan: Plan, scoring: str) -> dict[str, Any]:
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
