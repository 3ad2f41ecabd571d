"""What the processes of one study share through its storage, apart from proposing candidates: whether a
re-run resumes, which trials a killed worker left behind, the one MLflow study run they all record into,
and waiting for each other before the refit.

:class:`Coordination` is a study that one process runs alone with nothing stored; strategies with a storage
hand the runner their own (:class:`~hpsearch.strategies.sklearn_search.LedgerCoordination`,
:class:`~hpsearch.strategies.optuna_search.OptunaCoordination`).
"""

from __future__ import annotations

from hpsearch.results import TrialResult
from hpsearch.strategies.evaluate import Evaluate


class Coordination:
    """One process, nothing stored: no resume, no killed trials, no other workers."""

    def resumes(self) -> bool:
        """Whether a re-run continues the previous run's study (and its MLflow study run)."""
        return False

    def killed_trials(self) -> list[int]:
        """Trial numbers whose worker died mid-trial (their tracking runs must be closed)."""
        return []

    def shared_run_id(self) -> str | None:
        """The tracking study run this study's workers share, if the storage remembers one."""
        return None

    def share_run_id(self, run_id: str | None) -> None:
        """Remember the tracking study run for the study's other workers."""

    def busy(self) -> bool:
        """Whether other workers are still running trials of this study."""
        return False

    def wait_for_others(self, evaluate: Evaluate) -> list[TrialResult]:
        """Before refitting: wait for other workers' trials (running any retries here); their results."""
        return []

    def study_results(self, results: list[TrialResult]) -> list[TrialResult]:
        """Every trial of the study, including earlier runs' when the study resumes."""
        return results
