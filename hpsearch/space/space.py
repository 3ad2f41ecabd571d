"""One search space, three engines: scipy distributions (random), lists (grid), ``trial.suggest_*`` (Optuna).

Every value a strategy hands on has been through :func:`~hpsearch.space.dimensions.to_python`, so Keras
never sees a numpy scalar.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import numpy as np
from scipy import stats
from sklearn.model_selection import ParameterGrid, ParameterSampler

from hpsearch.space.dimensions import Categorical, Dimension, Distribution, Fixed, Float, Int, to_python

Params = dict[str, Any]


class Suggester(Protocol):
    """The part of ``optuna.Trial`` the space needs (kept here so this module never imports optuna)."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


class _IntLogUniform:
    """A log-uniform integer distribution with the ``rvs`` interface ParameterSampler expects."""

    def __init__(self, low: int, high: int) -> None:
        self._float = stats.loguniform(low, high + 1)
        self.low, self.high = low, high

    def rvs(self, random_state: Any = None) -> int:
        return min(int(self._float.rvs(random_state=random_state)), self.high)


def to_scipy(dim: Dimension) -> Any:
    """A distribution (or list) for scikit-learn's ``ParameterSampler`` / ``RandomizedSearchCV``."""
    if isinstance(dim, Int):
        if dim.log:
            return _IntLogUniform(dim.low, dim.high)
        return list(range(dim.low, dim.high + 1, dim.step)) if dim.step > 1 else stats.randint(dim.low, dim.high + 1)
    if isinstance(dim, Float):
        if dim.step is not None:
            return _float_steps(dim)
        if dim.low == dim.high:
            return [dim.low]
        return stats.loguniform(dim.low, dim.high) if dim.log else stats.uniform(dim.low, dim.high - dim.low)
    if isinstance(dim, Categorical):
        return list(dim.choices)
    if isinstance(dim, Distribution):
        return dim.dist
    return [dim.value]


def _float_steps(dim: Float) -> list[float]:
    count = int(np.floor((dim.high - dim.low) / dim.step + 1e-9)) + 1
    return [dim.low + i * dim.step for i in range(count)]


def to_grid(dim: Dimension, points: int) -> list[Any]:
    """The values GridSearchCV tries: all choices, or ``points`` evenly (log-evenly) spaced values."""
    if isinstance(dim, Distribution):
        raise ValueError(f"grid search needs ranges or lists, not {dim!r}; use strategy='random'")
    if isinstance(dim, Categorical):
        return list(dim.choices)
    if isinstance(dim, Fixed):
        return [dim.value]
    if isinstance(dim, Float) and dim.step is None:
        spaced = np.geomspace if dim.log else np.linspace
        return sorted({float(v) for v in spaced(dim.low, dim.high, points)})
    if isinstance(dim, Int) and dim.log:
        return sorted({int(round(v)) for v in np.geomspace(dim.low, dim.high, points)})
    # a range object, never a list: an int range may span 1e15 values
    values = _float_steps(dim) if isinstance(dim, Float) else range(dim.low, dim.high + 1, dim.step)
    if len(values) <= points:
        return list(values)
    return [values[i] for i in sorted(set(np.linspace(0, len(values) - 1, points).round().astype(int)))]


def suggest(trial: Suggester, name: str, dim: Dimension) -> Any:
    """Ask an Optuna trial for one value of ``dim``."""
    if isinstance(dim, Int):
        return trial.suggest_int(name, dim.low, dim.high, step=dim.step, log=dim.log)
    if isinstance(dim, Float):
        return trial.suggest_float(name, dim.low, dim.high, step=dim.step, log=dim.log)
    if isinstance(dim, Categorical):
        if all(isinstance(c, (str, int, float, bool)) or c is None for c in dim.choices):
            return trial.suggest_categorical(name, list(dim.choices))
        # Optuna stores only primitives: suggest the index of a composite choice (e.g. a list of widths).
        index = trial.suggest_categorical(f"{name}__index", list(range(len(dim.choices))))
        return dim.choices[index]
    if isinstance(dim, Distribution):
        raise ValueError(f"Optuna needs Int/Float/Categorical ranges, not {dim!r}; use strategy='random'")
    return dim.value


def default_value(dim: Dimension) -> Any:
    """A representative value: the (log-)middle of a range, the first choice, the fixed value."""
    if isinstance(dim, (Int, Float)):
        middle = float(np.sqrt(dim.low * dim.high)) if dim.log else (dim.low + dim.high) / 2
        return int(round(middle)) if isinstance(dim, Int) else middle
    if isinstance(dim, Categorical):
        return dim.choices[0]
    if isinstance(dim, Distribution):
        return to_python(dim.dist.median())
    return dim.value


Branches = dict[Any, dict[str, Dimension]]


class SearchSpace:
    """Named dimensions with the three engine mappings, optionally branching on one switch.

    ``switch``/``branches``: dimensions that exist per value of a categorical switch, e.g. a
    learning-rate range per optimizer (the chapter: re-tune the LR whenever the optimizer changes).
    Random and grid search get scikit-learn's list-of-dicts form (one sub-space per value); Optuna
    gets conditional ``suggest`` calls named ``learning_rate:adam``.
    """

    def __init__(self, dimensions: Mapping[str, Dimension], switch: str | None = None,
                 branches: Branches | None = None) -> None:
        self.dimensions = dict(dimensions)
        self.switch, self.branches = switch, branches or {}

    def _subspaces(self, convert: Any) -> list[dict[str, Any]] | dict[str, Any]:
        base = {k: convert(d) for k, d in self.dimensions.items() if k != self.switch}
        if not self.branches:
            return base
        return [{**base, self.switch: [choice], **{k: convert(d) for k, d in dims.items()}}
                for choice, dims in self.branches.items()]

    def defaults(self) -> Params:
        """One representative candidate (what the LR range test trains)."""
        return {name: default_value(dim) for name, dim in self.dimensions.items()}

    def sample(self, n: int, seed: int) -> Iterator[Params]:
        """``n`` candidates drawn exactly as ``RandomizedSearchCV(n_iter=n, random_state=seed)`` draws them."""
        distributions = self._subspaces(to_scipy) or {"__empty__": [None]}
        for params in ParameterSampler(distributions, n_iter=n, random_state=seed):
            params.pop("__empty__", None)
            yield to_python(params)

    def grid(self, points: int) -> Iterator[Params]:
        """Every candidate of the grid, in ``GridSearchCV``'s order."""
        for params in ParameterGrid(self._subspaces(lambda d: to_grid(d, points))):
            yield to_python(params)

    def grid_size(self, points: int) -> int:
        return len(ParameterGrid(self._subspaces(lambda d: to_grid(d, points))))

    def suggest(self, trial: Suggester) -> Params:
        """One candidate from an Optuna trial (branch dimensions suggested under ``name:choice``)."""
        params = {name: to_python(suggest(trial, name, dim)) for name, dim in self.dimensions.items()}
        if self.branches:
            choice = params[self.switch]
            for name, dim in self.branches[choice].items():
                params[name] = to_python(suggest(trial, f"{name}:{choice}", dim))
        return params

    def check_strategy(self, strategy: str) -> None:
        """Refuse, before any training, dimensions the strategy cannot search (scipy distributions)."""
        if strategy in ("random", "halving"):  # both draw with ParameterSampler
            return
        every = [*self.dimensions.items(), *(item for dims in self.branches.values() for item in dims.items())]
        for name, dim in every:
            if isinstance(dim, Distribution):
                raise ValueError(f"space[{name!r}]: the {strategy} strategy cannot search {dim!r}; "
                                 "use Int/Float/Categorical (or a list), or strategy='random'")

    def describe(self) -> dict[str, str]:
        """A readable one-line form of each dimension (logged as the study's search space)."""
        described = {name: repr(dim) for name, dim in self.dimensions.items()}
        for choice, dims in self.branches.items():
            described.update({f"{name}:{choice}": repr(dim) for name, dim in dims.items()})
        return described


def conditioned_on_optimizer(dimensions: Mapping[str, Dimension],
                             learning_rates: Mapping[Any, Dimension] | None = None) -> SearchSpace:
    """The space with the learning rate conditional on the optimizer, when both are searched.

    ``learning_rates`` gives a range per optimizer (from the LR range test); otherwise every
    optimizer gets the space's own ``learning_rate`` range, tuned separately for each.
    """
    optimizer, rate = dimensions.get("optimizer"), dimensions.get("learning_rate")
    if not isinstance(optimizer, Categorical) or (rate is None and not learning_rates):
        return SearchSpace(dimensions)
    if not learning_rates and isinstance(rate, Fixed):
        return SearchSpace(dimensions)
    base = {k: d for k, d in dimensions.items() if k != "learning_rate"}
    branches = {choice: {"learning_rate": (learning_rates or {}).get(choice, rate)} for choice in optimizer.choices}
    return SearchSpace(base, switch="optimizer", branches=branches)
