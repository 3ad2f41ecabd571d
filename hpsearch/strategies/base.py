"""The strategy contract: one hook that proposes candidates and hears their results (scikit-learn's
``_run_search``), and the evaluator it calls."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from hpsearch.config.schema import SearchConfig
from hpsearch.results import TrialResult
from hpsearch.space.space import SearchSpace
from hpsearch.strategies.coordination import Coordination
from hpsearch.strategies.evaluate import Evaluate


class Strategy(ABC):
    """A search strategy: subclasses implement :meth:`run_search`, the one hook (scikit-learn's ``_run_search``).

    ``prepare`` (open a storage) and ``planned_trials`` (for progress bars) have defaults; what a study's
    processes share lives in :attr:`coordination`.
    """

    name: str = ""
    quota: int | None = None  # the most trials a worker process runs (workers share Optuna studies only)

    def __init__(self, search: SearchConfig, space: SearchSpace, seed: int, study_name: str) -> None:
        self.search, self.space, self.seed, self.study_name = search, space, seed, study_name
        self.coordination = Coordination()  # replaced in prepare() by strategies that keep a storage

    def planned_trials(self) -> int:
        """How many trials this run will evaluate (for progress bars)."""
        return self.search.n_trials

    def prepare(self, setup: dict[str, Any]) -> None:  # noqa: B027
        """Open storages etc. before any training (errors here are the user's: bad URLs...).

        ``setup`` is what makes trials comparable (data, model, training, space, seed): a stored
        study run with another set-up must not be resumed.
        """

    @abstractmethod
    def run_search(self, evaluate: Evaluate) -> list[TrialResult]:
        """Evaluate candidates until done; return the results of this run's trials."""

    def best_of(self, trials: list[TrialResult]) -> int | None:
        """The number of the trial the study delivers, where the strategy has its own rule for it (successive
        halving: the best of the last round); None: the finished trial with the best score."""
        return None
