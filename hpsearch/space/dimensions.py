"""The search-space vocabulary: Int, Float, Categorical and Fixed dimensions.

These are the objects both doors use: the study file's ``space:`` entries are parsed into them
(:func:`parse_dimension`), and Python users build them directly (``hpsearch.Int(0, 3)``).
Mapping them onto scipy, grids and Optuna lives in :mod:`hpsearch.space`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def to_python(value: Any) -> Any:
    """Turn numpy scalars/arrays (recursively) into plain Python values Keras 3 accepts."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [to_python(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return type(value)(to_python(v) for v in value)
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    return value


def is_number(value: Any) -> bool:
    """An int or float (numpy's too), not a bool."""
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


MAX_INT = 10**15  # int bounds stay within +-MAX_INT: exact as floats (Optuna's storage, numpy's index math)
MAX_STEPS = 1_000_000  # values a stepped range may hold (random and grid search list them all)


def _finite(value: Any) -> bool:
    """A finite number that a float can hold (``10**400`` cannot)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _show(value: Any) -> str:
    """A bound as a message shows it (``1e+300``, ``inf``, or the first digits of a huge integer)."""
    if _finite(value) or isinstance(value, float):
        return f"{value:.6g}"
    return f"{str(value)[:8]}...({len(str(value))} digits)"


def _check_range(low: Any, high: Any, log: bool) -> None:
    if not (is_number(low) and is_number(high)):
        raise ValueError(f"bounds must be numbers, got [{low!r}, {high!r}]")
    if not (_finite(low) and _finite(high) and _finite(high - low)):
        raise ValueError(f"bounds must be finite, and less than 1.8e308 apart, got [{_show(low)}, {_show(high)}]")
    if low > high:
        raise ValueError(f"the range [{low}, {high}] is inverted: low must be <= high")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0, got [{low}, {high}]")


@dataclass(frozen=True)
class Int:
    """An integer in [low, high] (both inclusive), optionally log-uniform, with a step.

    Parameters
    ----------
    low, high : int
        The bounds, both included.
    log : bool, default False
        Sample log-uniformly (widths from 1 to 1000: as many small as large values); needs ``low >= 1``.
    step : int, default 1
        Only ``low``, ``low + step``, ... (not with ``log``).

    Examples
    --------
    >>> import hpsearch
    >>> hpsearch.Int(1, 100)  # the chapter's np.arange(1, 100), n_neurons
    Int(low=1, high=100, log=False, step=1)
    >>> hpsearch.Int(16, 512, log=True)
    Int(low=16, high=512, log=True, step=1)
    """

    low: int
    high: int
    log: bool = False
    step: int = 1

    def __post_init__(self) -> None:
        _check_range(self.low, self.high, self.log)
        if not all(float(v).is_integer() for v in (self.low, self.high)):
            raise ValueError(f"int bounds must be whole numbers, got [{self.low}, {self.high}]")
        if max(abs(self.low), abs(self.high)) > MAX_INT:
            raise ValueError(f"int bounds must lie within +-{MAX_INT:.0e}, got [{self.low:.6g}, {self.high:.6g}]")
        if not (isinstance(self.step, (int, np.integer)) and not isinstance(self.step, bool) and self.step >= 1):
            raise ValueError(f"step must be an integer >= 1, got {self.step!r}")
        if self.step > 1 and (self.high - self.low) // self.step >= MAX_STEPS:
            raise ValueError(f"step {self.step} gives more than {MAX_STEPS} values in [{self.low}, {self.high}]; "
                             "use a larger step, or no step")
        if self.log and self.step != 1:
            raise ValueError("an int range cannot have both log: true and a step")
        object.__setattr__(self, "low", int(self.low))
        object.__setattr__(self, "high", int(self.high))
        object.__setattr__(self, "step", int(self.step))


@dataclass(frozen=True)
class Float:
    """A float in [low, high]; ``log=True`` is the chapter's ``reciprocal(low, high)``.

    Parameters
    ----------
    low, high : float
        The bounds.
    log : bool, default False
        Sample log-uniformly (the chapter's advice for learning rates); needs ``low > 0``.
    step : float, optional
        Only ``low``, ``low + step``, ... (not with ``log``).

    Examples
    --------
    >>> import hpsearch
    >>> hpsearch.Float(3e-4, 3e-2, log=True)  # the chapter's reciprocal(3e-4, 3e-2), learning_rate
    Float(low=0.0003, high=0.03, log=True, step=None)
    """

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def __post_init__(self) -> None:
        _check_range(self.low, self.high, self.log)
        if self.step is not None and (not is_number(self.step) or not _finite(self.step) or self.step <= 0):
            raise ValueError(f"step must be a finite number > 0, got {self.step!r}")
        if self.step is not None and (self.high - self.low) / self.step >= MAX_STEPS:
            raise ValueError(f"step {self.step} gives more than {MAX_STEPS} values in [{self.low}, {self.high}]; "
                             "use a larger step, or no step")
        if self.log and self.step is not None:
            raise ValueError("a float range cannot have both log: true and a step")
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))


@dataclass(frozen=True)
class Categorical:
    """One of a list of choices (numbers, strings, booleans, or lists such as layer widths).

    Parameters
    ----------
    choices : sequence
        The values, tried in order by grid search, sampled uniformly otherwise.

    Attributes
    ----------
    choices : tuple
        The values as plain Python (numpy scalars converted: Keras 3 refuses them).

    Examples
    --------
    >>> import hpsearch
    >>> hpsearch.Categorical(["sgd", "adam", "nadam"])
    Categorical(choices=('sgd', 'adam', 'nadam'))
    >>> hpsearch.Categorical([[100, 100, 100], [300, 100, 30]])  # same-width vs pyramid layers
    Categorical(choices=([100, 100, 100], [300, 100, 30]))
    """

    choices: tuple = field(default_factory=tuple)

    def __init__(self, choices: Any) -> None:
        values = tuple(to_python(list(choices))) if not isinstance(choices, str) else None
        if not values:
            raise ValueError(f"categorical needs a non-empty list of choices, got {choices!r}")
        object.__setattr__(self, "choices", values)


@dataclass(frozen=True)
class Fixed:
    """A single value: part of the space for bookkeeping, never searched.

    Parameters
    ----------
    value : object
        The value every candidate gets (``"auto"`` for ``learning_rate``: the LR range test sets the range).

    Examples
    --------
    >>> import hpsearch
    >>> hpsearch.Fixed("adam")
    Fixed(value='adam')
    """

    value: Any

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", to_python(self.value))


@dataclass(frozen=True)
class Distribution:
    """Any other scipy.stats distribution (an object with ``rvs``): usable by random search only.

    Parameters
    ----------
    dist : scipy.stats frozen distribution
        Sampled with its ``rvs``.

    Examples
    --------
    >>> from scipy.stats import norm
    >>> from hpsearch.space.dimensions import Distribution
    >>> Distribution(norm(0.2, 0.05))  # say, a dropout rate (SearchCV wraps scipy distributions itself)
    Distribution(norm(0.2, 0.05))
    """

    dist: Any

    def __repr__(self) -> str:
        name = getattr(getattr(self.dist, "dist", None), "name", type(self.dist).__name__)
        return f"Distribution({name}{tuple(getattr(self.dist, 'args', ()))})"


Dimension = Int | Float | Categorical | Fixed | Distribution
DIMENSION_TYPES = (Int, Float, Categorical, Fixed, Distribution)
# scipy.stats distributions that are exactly one of ours (bounds read from ``support()``).
_SCIPY_EQUIVALENTS = {"loguniform": "log", "reciprocal": "log", "uniform": "float", "randint": "int"}


def as_dimension(value: Any) -> Dimension:
    """What the Python API accepts: dimensions, scipy distributions (the chapter's ``reciprocal``),
    lists/arrays (the chapter's ``np.arange(1, 100)``) and single values."""
    if isinstance(value, (*DIMENSION_TYPES, dict)):
        return parse_dimension(value)
    if hasattr(value, "rvs"):
        kind = _SCIPY_EQUIVALENTS.get(getattr(getattr(value, "dist", None), "name", ""))
        if kind is None:
            return Distribution(value)
        low, high = (to_python(v) for v in value.support())
        if kind == "int":
            return Int(int(low), int(high))
        return Float(low, high, log=kind == "log")
    if isinstance(value, (list, tuple, np.ndarray, range)):
        return Categorical(list(value))
    return Fixed(value)
_KINDS = ("int", "float", "categorical", "fixed")
_OPTIONS = {"int": {"log", "step"}, "float": {"log", "step"}, "categorical": set(), "fixed": set()}


def parse_dimension(raw: Any) -> Dimension:
    """Parse one ``space:`` entry of a study file into a dimension.

    Forms: ``{int: [low, high]}``, ``{float: [low, high], log: true}``,
    ``{categorical: [a, b]}`` or a plain list, ``{fixed: value}`` or a plain scalar.
    """
    if isinstance(raw, DIMENSION_TYPES):
        return raw
    if isinstance(raw, list):
        return Categorical(raw)
    if not isinstance(raw, dict):
        return Fixed(raw)
    kinds = [k for k in raw if k in _KINDS]
    if len(kinds) != 1:
        raise ValueError(
            f"expected exactly one of {', '.join(_KINDS)} (e.g. {{int: [1, 3]}}), got keys {sorted(map(str, raw))}"
        )
    kind = kinds[0]
    unknown = set(raw) - {kind} - _OPTIONS[kind]
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(map(str, unknown))} for {kind}; allowed: {sorted(_OPTIONS[kind])}")
    options = {k: v for k, v in raw.items() if k != kind}
    if "log" in options and not isinstance(options["log"], bool):
        raise ValueError(f"log must be true or false, got {options['log']!r}")
    value = raw[kind]
    if kind == "fixed":
        return Fixed(value)
    if kind == "categorical":
        if not isinstance(value, list):
            raise ValueError(f"categorical needs a list of choices, got {value!r}")
        return Categorical(value)
    if not (isinstance(value, list) and len(value) == 2):
        raise ValueError(f"{kind} needs a [low, high] pair, got {value!r}")
    return (Int if kind == "int" else Float)(value[0], value[1], **options)
