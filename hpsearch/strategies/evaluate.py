"""The evaluator as a strategy sees it: it fits and scores the candidates the strategy proposes."""

from __future__ import annotations

from typing import Any, Protocol

from hpsearch.evaluation.budget import Budget
from hpsearch.results import FoldLedger, PruningReporter, TrialResult


class Evaluate(Protocol):
    """Fits and scores candidates (the evaluator); never raises for a failing candidate."""

    budget: Budget  # strategies start no trial once it is exhausted

    def __call__(self, params: dict[str, Any], number: int, reporter: PruningReporter | None = None,
                 ledger: FoldLedger | None = None) -> TrialResult:
        """One candidate, now, in this process (pruning needs that)."""

    def many(self, candidates: list[tuple[int, dict[str, Any]]], ledger: FoldLedger | None = None
             ) -> list[TrialResult]:
        """A batch of (number, params), in parallel when the study's execution allows it."""


def one_by_one(evaluate: Evaluate, candidates: list[tuple[int, dict[str, Any]]],
               ledger: FoldLedger | None = None) -> list[TrialResult]:
    """:meth:`Evaluate.many` done here, in turn, until the budget is exhausted."""
    results = []
    for number, params in candidates:
        if evaluate.budget.exhausted():
            break
        results.append(evaluate(params, number, None, ledger))
    return results
