"""Search strategies behind one contract (:class:`~hpsearch.strategies.base.Strategy`)."""

from __future__ import annotations

from hpsearch.config.schema import SearchConfig
from hpsearch.space.space import SearchSpace
from hpsearch.strategies.base import Strategy


def make_strategy(search: SearchConfig, space: SearchSpace, seed: int, study_name: str,
                  resource: tuple[str, int] | None = None) -> Strategy:
    """The strategy named by ``search.strategy`` (Optuna is imported only when asked for). ``resource``: what
    successive halving shares out, (the param that sets a fit's epochs, the study's epochs)."""
    if search.strategy == "halving":
        from hpsearch.strategies.halving import HalvingStrategy

        return HalvingStrategy(search, space, seed, study_name, resource)
    if search.strategy == "optuna":
        from hpsearch.strategies.optuna_search import OptunaStrategy as chosen
    else:
        from hpsearch.strategies.sklearn_search import GridStrategy, RandomStrategy

        chosen = GridStrategy if search.strategy == "grid" else RandomStrategy
    return chosen(search, space, seed, study_name)
