"""RandomizedSearchCV's and GridSearchCV's candidates (ParameterSampler / ParameterGrid), our evaluator."""

from __future__ import annotations

from hpsearch.results import TrialResult
from hpsearch.strategies.base import Evaluate, Strategy


class RandomStrategy(Strategy):
    """The chapter's RandomizedSearchCV: ``n_trials`` candidates drawn with the study's seed."""

    name = "random"

    def planned_trials(self) -> int:
        return len(list(self.space.sample(self.search.n_trials, self.seed)))

    def run_search(self, evaluate: Evaluate) -> list[TrialResult]:
        return [evaluate(params, number, None)
                for number, params in enumerate(self.space.sample(self.search.n_trials, self.seed))]


class GridStrategy(Strategy):
    """GridSearchCV: every combination (ranges become ``search.grid_points`` values each)."""

    name = "grid"

    def planned_trials(self) -> int:
        return self.space.grid_size(self.search.grid_points)

    def run_search(self, evaluate: Evaluate) -> list[TrialResult]:
        return [evaluate(params, number, None)
                for number, params in enumerate(self.space.grid(self.search.grid_points))]
