"""Successive halving over random candidates, with epochs as the resource (scikit-learn's
``HalvingRandomSearchCV``): every candidate trains for a few epochs, the best 1/factor of them again for factor
times more, until the last round trains the study's full epochs.

Each (candidate, round) is one trial, with its epochs among its params (``epochs``, or ``step__epochs`` inside a
pipeline); the study's best is the best trial of the last round that ran, as scikit-learn picks it. Rounds are
numbered deterministically, so a re-run with ``search.storage`` resumes from the fold ledger."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from hpsearch.config.schema import SearchConfig
from hpsearch.errors import ConfigError
from hpsearch.results import TrialResult
from hpsearch.space.space import SearchSpace
from hpsearch.strategies.evaluate import Evaluate
from hpsearch.strategies.sklearn_search import _LedgerStrategy


class HalvingStrategy(_LedgerStrategy):
    """``search.n_trials`` random candidates, halved (``search.halving_factor``) round after round.

    ``resource``: (the param that sets a fit's epochs, the study's epochs: what the last round trains).
    """

    name = "halving"

    def __init__(self, search: SearchConfig, space: SearchSpace, seed: int, study_name: str,
                 resource: tuple[str, int] | None = None) -> None:
        super().__init__(search, space, seed, study_name)
        if resource is None or resource[1] < 1:
            raise ConfigError("the halving strategy shares out epochs: it needs the study's epochs",
                              field="search.strategy")
        self.resource, self.epochs = resource
        self._last_round: list[int] = []

    def schedule(self) -> list[tuple[int, int]]:
        """(candidates, epochs) of each round: the candidates divided by the factor, the epochs multiplied by it, the
        last round at the study's epochs."""
        n, factor = self.search.n_trials, self.search.halving_factor
        rounds = 1 + min(int(math.log(n, factor) + 1e-9), int(math.log(self.epochs, factor) + 1e-9))
        return [(math.ceil(n / factor ** i), max(1, self.epochs // factor ** (rounds - 1 - i))) for i in range(rounds)]

    def candidates(self) -> Iterable[dict[str, Any]]:
        return self.space.sample(self.search.n_trials, self.seed)

    def n_candidates(self) -> int:
        return sum(size for size, _ in self.schedule())

    def run_search(self, evaluate: Evaluate) -> list[TrialResult]:
        drawn = list(self.candidates())
        ranked, first, results = list(range(len(drawn))), 0, []
        for size, epochs in self.schedule():
            alive = ranked[:size]
            batch = [(first + i, {**drawn[c], self.resource: epochs}) for i, c in enumerate(alive)]
            first += size
            ended = {number: self._ended(number, params) for number, params in batch}
            todo = [(number, params) for number, params in batch if ended[number] is None]
            fresh = {result.number: result for result in evaluate.many(todo, self.ledger)}
            round_results = [ended[number] or fresh.get(number) for number, _ in batch]
            results += [result for result in round_results if result is not None]
            self._last_round = [result.number for result in round_results if result is not None]
            if None in round_results:  # the budget ended inside this round
                break
            order = sorted(range(size), key=lambda i: -_rank(round_results[i]))
            ranked = [alive[i] for i in order]
        return results

    def best_of(self, trials: list[TrialResult]) -> int | None:
        """The best finished trial of the last round that ran (None: none finished there)."""
        last = [t for t in trials if t.number in self._last_round and math.isfinite(t.score)]
        return max(last, key=lambda t: t.score).number if last else None


def _rank(result: TrialResult) -> float:
    return result.score if math.isfinite(result.score) else -math.inf
