"""The strategy contract: propose candidates, hear their results (scikit-learn's ``_run_search``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

from hpsearch.budget import Budget
from hpsearch.config import SearchConfig
from hpsearch.results import FoldLedger, PruningReporter, TrialResult
from hpsearch.space import SearchSpace


class Evaluate(Protocol):
    """Fits and scores candidates (the evaluator); never raises for a failing candidate."""

    budget: Budget  # strategies start no trial once it is exhausted

    def __call__(self, params: dict[str, Any], number: int, reporter: PruningReporter | None = None,
                 ledger: FoldLedger | None = None) -> TrialResult:
        """One candidate, now, in this process (pruning needs that)."""

    def many(self, candidates: list[tuple[int, dict[str, Any]]], ledger: FoldLedger | None = None
             ) -> list[TrialResult]:
        """A batch of (number, params), in parallel when the study's execution allows it."""


class Strategy(ABC):
    """A search strategy. Subclasses implement :meth:`run_search` only."""

    name: str = ""
    quota: int | None = None  # the most trials a worker process runs (workers share Optuna studies only)

    def __init__(self, search: SearchConfig, space: SearchSpace, seed: int, study_name: str) -> None:
        self.search, self.space, self.seed, self.study_name = search, space, seed, study_name

    def planned_trials(self) -> int:
        """How many trials this run will evaluate (for progress bars)."""
        return self.search.n_trials

    def resumes(self) -> bool:
        """Whether a re-run continues the previous run's study (and its MLflow study run)."""
        return False

    def prepare(self, setup: dict[str, Any]) -> None:  # noqa: B027
        """Open storages etc. before any training (errors here are the user's: bad URLs...).

        ``setup`` is what makes trials comparable (data, model, training, space, seed): a stored
        study run with another set-up must not be resumed.
        """

    def killed_trials(self) -> list[int]:
        """Trial numbers whose worker died mid-trial (their tracking runs must be closed)."""
        return []

    def shared_run_id(self) -> str | None:
        """The tracking study run this study's workers share, if the storage remembers one."""
        return None

    def share_run_id(self, run_id: str | None) -> None:  # noqa: B027
        """Remember the tracking study run for the study's other workers."""

    def busy(self) -> bool:
        """Whether other workers are still running trials of this study."""
        return False

    def wait_for_others(self, evaluate: Evaluate) -> list[TrialResult]:
        """Before refitting: wait for other workers' trials (running any retries here); their results."""
        return []

    def study_results(self, results: list[TrialResult]) -> list[TrialResult]:
        """Every trial of the study, including earlier runs' when the strategy resumes."""
        return results

    @abstractmethod
    def run_search(self, evaluate: Evaluate) -> list[TrialResult]:
        """Evaluate candidates until done; return the results of this run's trials."""
