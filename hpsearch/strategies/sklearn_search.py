"""RandomizedSearchCV's and GridSearchCV's candidates (ParameterSampler / ParameterGrid), our evaluator.

Neither can resume by itself: with ``search.storage`` set, finished (candidate, fold) pairs go to the
fold ledger, and a re-run (same seed, so the same candidates) skips them.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable
from typing import Any

from hpsearch.errors import ConfigError
from hpsearch.results import TrialResult
from hpsearch.strategies.base import Strategy
from hpsearch.strategies.coordination import Coordination
from hpsearch.strategies.evaluate import Evaluate
from hpsearch.strategies.ledger import SqlLedger, canonical


class LedgerCoordination(Coordination):
    """A random or grid study in a fold ledger: it resumes, and remembers its MLflow study run."""

    def __init__(self, ledger: SqlLedger) -> None:
        self.ledger = ledger

    def resumes(self) -> bool:
        return self.ledger.existed

    def killed_trials(self) -> list[int]:
        return self.ledger.unfinished()

    def shared_run_id(self) -> str | None:
        return self.ledger.study_run_id()

    def share_run_id(self, run_id: str | None) -> None:
        if run_id and self.shared_run_id() is None:
            self.ledger.set_study_run_id(run_id)

    def study_results(self, results: list[TrialResult]) -> list[TrialResult]:
        """Every ended trial in the ledger, earlier runs' included (this run's as measured)."""
        merged = {trial.number: trial for trial in self.ledger.ended()} | {r.number: r for r in results}
        return [merged[number] for number in sorted(merged)]


class _LedgerStrategy(Strategy):
    """Candidates fixed up front, evaluated as one batch, resumed from the fold ledger."""

    ledger: SqlLedger | None = None

    @abstractmethod
    def candidates(self) -> Iterable[dict[str, Any]]:
        """The candidates, in a deterministic order."""

    def n_candidates(self) -> int:
        return len(list(self.candidates()))

    def planned_trials(self) -> int:
        """Candidates still to evaluate (all of them until the ledger is open)."""
        if self.ledger is None:
            return self.n_candidates()
        return sum(1 for n in range(self.n_candidates()) if self.ledger.trial(n) is None)

    def prepare(self, setup: dict[str, Any]) -> None:
        if self.search.storage is not None:
            self.ledger = SqlLedger(self.search.storage, self.study_name, self.name)
            self.ledger.open(setup)
            self.coordination = LedgerCoordination(self.ledger)

    def _ended(self, number: int, params: dict[str, Any]) -> TrialResult | None:
        """The recorded result of candidate ``number``, if it ended in an earlier run."""
        ended = self.ledger.trial(number) if self.ledger else None
        if ended is not None and canonical(ended.params) != canonical(params):
            raise ConfigError(f"candidate {number} of study {self.study_name!r} was {ended.params} in the earlier "
                              f"run and is {params} now (another scikit-learn version?); give this one a new "
                              f"name, e.g. --set name={self.study_name}-2", field="name")
        if ended is not None:
            ended.params = params  # the candidate as proposed (tuples stay tuples)
        return ended

    def run_search(self, evaluate: Evaluate) -> list[TrialResult]:
        numbered = list(enumerate(self.candidates()))
        ended = {number: self._ended(number, params) for number, params in numbered}
        todo = [(number, params) for number, params in numbered if ended[number] is None]
        fresh = {result.number: result for result in evaluate.many(todo, self.ledger)}  # all, unless the budget ends
        return [ended[number] or fresh[number] for number, _ in numbered if ended[number] or number in fresh]


class RandomStrategy(_LedgerStrategy):
    """The chapter's RandomizedSearchCV: ``n_trials`` candidates drawn with the study's seed."""

    name = "random"

    def candidates(self) -> Iterable[dict[str, Any]]:
        return self.space.sample(self.search.n_trials, self.seed)


class GridStrategy(_LedgerStrategy):
    """GridSearchCV: every combination (ranges become ``search.grid_points`` values each)."""

    name = "grid"

    def n_candidates(self) -> int:
        return self.space.grid_size(self.search.grid_points)

    def candidates(self) -> Iterable[dict[str, Any]]:
        return self.space.grid(self.search.grid_points)
