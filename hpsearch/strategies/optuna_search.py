"""Optuna: ask/tell over the space, per-epoch pruning, resumable storage (the only optuna importer)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from hpsearch.config import absolute_sqlite
from hpsearch.errors import ConfigError, TrackingError, mask_credentials
from hpsearch.results import TrialResult
from hpsearch.strategies.base import Evaluate, Strategy

_STATES = {"finished": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}
_DONE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class _Reporter:
    """Hands intermediate values (greater is better) to the trial and asks the pruner."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def should_prune(self, value: float, step: int) -> bool:
        self.trial.report(value, step)
        return self.trial.should_prune()


class OptunaStrategy(Strategy):
    """An Optuna study (TPE by default) in a storage, so that re-running the study resumes it."""

    name = "optuna"
    study: optuna.Study | None = None

    def resumes(self) -> bool:
        return self.search.storage is not None

    def _sampler(self) -> optuna.samplers.BaseSampler:
        samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                    "cmaes": optuna.samplers.CmaEsSampler, "qmc": optuna.samplers.QMCSampler}
        return samplers[self.search.sampler](seed=self.seed)

    def _pruner(self) -> optuna.pruners.BasePruner:
        return {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
                "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
                "hyperband": optuna.pruners.HyperbandPruner}[self.search.pruner]()

    def prepare(self) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            storage = absolute_sqlite(self.search.storage) if self.search.storage else None
            self.study = optuna.create_study(study_name=self.study_name, storage=storage,
                                             sampler=self._sampler(), pruner=self._pruner(),
                                             direction="maximize", load_if_exists=True)
        except Exception as exc:  # SQLAlchemy/driver errors: the URL is the user's to fix
            raise TrackingError(f"cannot open search.storage {mask_credentials(str(self.search.storage))}: "
                                f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        space = self.space.describe()
        recorded = self.study.user_attrs.get("hpsearch_space")
        if recorded is None:
            self.study.set_user_attr("hpsearch_space", space)
        elif recorded != space:
            raise ConfigError(
                f"study {self.study_name!r} in {mask_credentials(str(self.search.storage))} was created with a different "
                f"search space ({recorded}); give this one a new name, e.g. --set name={self.study_name}-2",
                field="search.space")

    def _done(self) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False) if t.state in _DONE]

    def planned_trials(self) -> int:
        """Trials still to run: n_trials minus those the storage already holds (once prepared)."""
        return max(self.search.n_trials - len(self._done()), 0) if self.study else self.search.n_trials

    def study_results(self, results: list[TrialResult]) -> list[TrialResult]:
        """Every finished trial in the storage, earlier runs' included (this run's as measured)."""
        measured = {r.number: r for r in results}
        states = {v: k for k, v in _STATES.items()}
        return [measured.get(t.number) or TrialResult(number=t.number, params=t.user_attrs.get("params", t.params), state=states[t.state],
                            fold_scores=t.user_attrs.get("fold_scores", []), run_id=t.user_attrs.get("run_id"),
                            reason=t.user_attrs.get("reason"))
                for t in self._done()]

    def run_search(self, evaluate: Evaluate) -> list[TrialResult]:
        results = []
        for _ in range(self.planned_trials()):
            trial = self.study.ask()
            params = self.space.suggest(trial)
            result = evaluate(params, trial.number, _Reporter(trial))
            for key, value in (("params", params), ("fold_scores", result.fold_scores),
                               ("run_id", result.run_id), ("reason", result.reason)):
                trial.set_user_attr(key, value)
            if result.state == "finished":
                self.study.tell(trial, result.score)
            else:
                self.study.tell(trial, state=_STATES[result.state])
            results.append(result)
        return results
