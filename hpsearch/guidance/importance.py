"""Which hyperparameters mattered: Optuna's importance evaluator over a recorded study's finished trials
(of any strategy), with each param's distribution inferred from the values the trials took."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from hpsearch.space.dimensions import is_number
from hpsearch.tracking.recorded import StudyRecord, TrialRecord


def spans_decade(low: float, high: float) -> bool:
    """Positive values over more than a factor of 10: drawn on a log axis, given a log distribution."""
    return low > 0 and high / low > 10


def param_names(trials: Sequence[TrialRecord]) -> list[str]:
    """Every param any of ``trials`` has, in first-seen order."""
    return list(dict.fromkeys(name for t in trials for name in t.params))


def _distribution(values: list[Any]) -> BaseDistribution:
    """The Optuna distribution the observed values fit: int / float (log over a decade) / categorical."""
    if all(isinstance(v, int) and is_number(v) for v in values):
        return IntDistribution(min(values), max(values), log=spans_decade(min(values), max(values)))
    if all(is_number(v) for v in values):
        low, high = float(min(values)), float(max(values))
        return FloatDistribution(low, high, log=spans_decade(low, high))
    return CategoricalDistribution(sorted({_choice(v) for v in values}))


def _choice(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list) else str(value)


def _optuna_value(value: Any, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return _choice(value)
    return float(value) if isinstance(distribution, FloatDistribution) else value


def optuna_study(record: StudyRecord) -> optuna.Study:
    """An in-memory Optuna study of the finished trials, with distributions inferred from their values."""
    finished = record.finished
    distributions = {n: _distribution([t.params[n] for t in finished if n in t.params]) for n in param_names(finished)}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=record.name, direction="maximize")
    study.add_trials([optuna.trial.create_trial(
        params={n: _optuna_value(v, distributions[n]) for n, v in t.params.items()},
        distributions={n: distributions[n] for n in t.params}, value=t.score) for t in finished])
    return study


def param_importances(record: StudyRecord) -> dict[str, float]:
    """Optuna's importance of each varying param over the finished trials (best first); {} when it cannot say."""
    finished = record.finished
    varying = [n for n in param_names(finished) if len({_choice(t.params.get(n)) for t in finished}) > 1]
    if len(finished) < 2 or not varying:
        return {}
    importances = optuna.importance.get_param_importances(optuna_study(record), params=varying)
    return {name: float(value) for name, value in importances.items()}
