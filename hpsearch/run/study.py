"""The CLI's door: a whole study file run through :func:`~hpsearch.run.search.run_search` (the LR range
test first where ``learning_rate: auto``), and the shared study that ``--workers`` join."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from hpsearch.config.schema import StudyConfig
from hpsearch.evaluation.budget import Budget
from hpsearch.evaluation.evaluator import Evaluator
from hpsearch.evaluation.execution import make_executor
from hpsearch.guidance.lr_finder import RangeTest, optimizers_of, plot, range_test
from hpsearch.results import NoObserver, StudyResult, TrialObserver
from hpsearch.run.plan import Plan, data_splits, final_model, plan_study, study_params, wants_auto_learning_rate
from hpsearch.run.search import open_shared_study as open_study
from hpsearch.run.search import run_search
from hpsearch.space.dimensions import Categorical
from hpsearch.space.space import SearchSpace, conditioned_on_optimizer
from hpsearch.strategies import make_strategy
from hpsearch.tracking.base import Tracker


def range_tests(plan: Plan, tracker: Tracker, folder: Path, start: float = 1e-5, end: float = 10.0,
                iterations: int = 300) -> list[tuple[Any, RangeTest, Path]]:
    """The LR range test once per optimizer of the study, on its model (fixed params, the space's defaults):
    (optimizer, test, plot) each, the plot in ``folder``, each test logged by ``tracker``."""
    done = []
    for optimizer in optimizers_of(plan.study):
        params = {k: v for k, v in plan.space.defaults().items() if k != "learning_rate"}
        if optimizer is not None:
            params["optimizer"] = optimizer
        test = range_test(plan.fitter.new_estimator, params, plan.data.X_train, plan.data.y_train,
                          plan.study.data.scale, plan.study.seed, start, end, iterations)
        path = plot(test, folder / (f"lr_find_{optimizer}.png" if optimizer else "lr_find.png"))
        tracker.log_range_test(plan.study.name, test, path)
        done.append((optimizer, test, path))
    return done


def resolve_auto_learning_rate(plan: Plan, tracker: Tracker) -> dict[str, Any]:
    """Run the range test (once per optimizer), put the found ranges in the space, log them.

    Returns the study-run params that record the chosen ranges.
    """
    ranges, params = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for optimizer, test, _ in range_tests(plan, tracker, Path(folder)):
            ranges[optimizer] = test.search_range()
            name = f"learning_rate:{optimizer}" if optimizer is not None else "learning_rate"
            params[f"auto.{name}"] = repr(ranges[optimizer])
            params[f"auto.{name}.suggested"] = test.suggested_lr
    dimensions = {k: v for k, v in plan.study.search.space.items() if k != "learning_rate"}
    if isinstance(dimensions.get("optimizer"), Categorical):
        plan.space = conditioned_on_optimizer(dimensions, learning_rates=ranges)
    else:
        plan.space = SearchSpace({**dimensions, "learning_rate": next(iter(ranges.values()))})
    plan.strategy = make_strategy(plan.study.search, plan.space, plan.study.seed, plan.study.name,
                                  ("epochs", plan.study.training.epochs))
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
        result = run_search(study.name, plan.strategy, evaluator, tracker, {**study_params(plan, scoring), **auto},
                            study_text, refit, test=(data.X_test, data.y_test), worker=worker,
                            observer=observer, report=study.tracking.report, final=final,
                            validation=validation, ensemble_size=search.ensemble_size, datasets=data_splits(plan))
    return result


def open_shared_study(plan: Plan, study_text: str) -> str | None:
    """Create the shared study's storage and MLflow study run before workers start, so they all join it."""
    return open_study(plan.study.name, plan.strategy, plan.tracker(), study_params(plan, plan.scoring), study_text)
