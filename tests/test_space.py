"""Tests for hpsearch.space.dimensions and hpsearch.space: validation, parsing, and the three engine mappings.

No model is trained here; the only Keras use is building one Dense layer from a sampled value.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import optuna
import pytest
from scipy import stats
from sklearn.model_selection import ParameterGrid, ParameterSampler

from hpsearch.space.dimensions import Categorical, Fixed, Float, Int, parse_dimension, to_python
from hpsearch.space.space import SearchSpace, to_grid, to_scipy

optuna.logging.set_verbosity(optuna.logging.WARNING)


def python_types_only(value) -> bool:
    """True if ``value`` holds no numpy object at any depth."""
    if isinstance(value, (np.generic, np.ndarray)):
        return False
    if isinstance(value, (list, tuple)):
        return all(python_types_only(v) for v in value)
    if isinstance(value, dict):
        return all(python_types_only(v) for v in value.values())
    return True


# --- dimension validation --------------------------------------------------------------------------


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Int(10, 1), "inverted"),
    (lambda: Float(1.0, 0.5), "inverted"),
    (lambda: Float(0.0, 1.0, log=True), "low > 0"),
    (lambda: Float(-1e-3, 1e-1, log=True), "low > 0"),
    (lambda: Int(0, 100, log=True), "low > 0"),
    (lambda: Int("a", 5), "must be numbers"),
    (lambda: Float(0.1, "1"), "must be numbers"),
    (lambda: Float(None, 1.0), "must be numbers"),
    (lambda: Int(True, 5), "must be numbers"),  # booleans are not bounds
    (lambda: Float(0.0, math.inf), "finite"),
    (lambda: Float(math.nan, 1.0), "finite"),
    (lambda: Int(1.5, 3), "whole numbers"),
    (lambda: Int(1, 7.25), "whole numbers"),
    (lambda: Int(1, 10, step=0), "step"),
    (lambda: Int(1, 10, step=1.5), "step"),
    (lambda: Int(1, 10, log=True, step=2), "log"),
    (lambda: Float(0.0, 1.0, step=0), "step"),
    (lambda: Float(1e-3, 1.0, log=True, step=0.1), "log"),
    (lambda: Categorical([]), "non-empty"),
    (lambda: Categorical(()), "non-empty"),
    (lambda: Categorical("relu"), "list"),  # a bare string is not a list of choices
], ids=lambda v: v if isinstance(v, str) else "")
def test_invalid_dimensions_raise_value_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_valid_dimensions_normalise_their_bounds():
    assert Int(1.0, 3.0) == Int(1, 3) and type(Int(1.0, 3.0).low) is int
    assert Int(np.int64(2), np.int64(5)).high == 5 and type(Int(np.int64(2), np.int64(5)).high) is int
    assert Float(1, 2).low == 1.0 and type(Float(1, 2).low) is float
    assert Float(0.5, 0.5).low == 0.5  # a degenerate range is allowed
    assert Categorical(np.array([1, 2])).choices == (1, 2)
    assert all(type(c) is int for c in Categorical(np.array([1, 2])).choices)
    assert Fixed(np.float32(0.5)).value == 0.5 and type(Fixed(np.float32(0.5)).value) is float


# --- parse_dimension: the study file's forms -------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ({"int": [1, 3]}, Int(1, 3)),
    ({"int": [8, 512], "log": True}, Int(8, 512, log=True)),
    ({"int": [0, 100], "step": 10}, Int(0, 100, step=10)),
    ({"float": [1e-4, 1e-1], "log": True}, Float(1e-4, 1e-1, log=True)),
    ({"float": [0.0, 0.5]}, Float(0.0, 0.5)),
    ({"float": [0.0, 0.5], "step": 0.1}, Float(0.0, 0.5, step=0.1)),
    ({"categorical": ["relu", "tanh"]}, Categorical(["relu", "tanh"])),
    (["relu", "tanh"], Categorical(["relu", "tanh"])),
    ([[64, 32], [50, 50]], Categorical([[64, 32], [50, 50]])),
    ("adam", Fixed("adam")),
    (30, Fixed(30)),
    (None, Fixed(None)),
    ({"fixed": [1, 2]}, Fixed([1, 2])),  # a list kept whole, not a categorical
    ({"fixed": {"a": 1}}, Fixed({"a": 1})),
], ids=str)
def test_parse_dimension_forms(raw, expected):
    assert parse_dimension(raw) == expected


def test_parse_dimension_keeps_dimension_objects():
    dim = Float(0.1, 0.2)
    assert parse_dimension(dim) is dim


@pytest.mark.parametrize(("raw", "message"), [
    ({"int": [1, 3], "foo": 1}, r"unknown option\(s\) \['foo'\] for int"),
    ({"categorical": ["a"], "log": True}, r"unknown option\(s\) \['log'\] for categorical"),
    ({"int": [1, 3], "float": [0.0, 1.0]}, "exactly one of"),
    ({"range": [1, 3]}, "exactly one of"),
    ({}, "exactly one of"),
    ({"int": [1, 2, 3]}, r"\[low, high\] pair"),
    ({"int": 3}, r"\[low, high\] pair"),
    ({"float": "0.1..1"}, r"\[low, high\] pair"),
    ({"categorical": "relu"}, "list of choices"),
    ({"categorical": []}, "non-empty"),
    ({"float": [0.1, 1.0], "log": "yes"}, "log must be true or false"),
    ({"int": [16, 4]}, "inverted"),
    ({"float": [0.0, 1.0], "log": True}, "low > 0"),
    ({"float": ["1e-4", "1e-2"]}, "must be numbers"),  # strings are refused, even numeric-looking ones
    ({"int": [1.5, 4]}, "whole numbers"),
], ids=str)
def test_parse_dimension_errors(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_dimension(raw)


# --- to_python -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected", "kind"), [
    (np.int64(42), 42, int),
    (np.int32(-3), -3, int),
    (np.float32(0.5), 0.5, float),
    (np.float64(1e-3), 1e-3, float),
    (np.bool_(True), True, bool),
    (np.str_("relu"), "relu", str),
    (np.array([64, 32]), [64, 32], list),
    (np.array([[1, 2], [3, 4]]), [[1, 2], [3, 4]], list),
    ([np.int64(1), (np.float32(2.0), np.array([3]))], [1, (2.0, [3])], list),
    ({"units": np.int64(8), "widths": np.array([4, 2])}, {"units": 8, "widths": [4, 2]}, dict),
    ("adam", "adam", str),
    (None, None, type(None)),
], ids=lambda v: type(v).__name__)
def test_to_python_removes_numpy_types(value, expected, kind):
    result = to_python(value)
    assert result == expected
    assert type(result) is kind
    assert python_types_only(result)


def test_to_python_bool_stays_bool():
    assert to_python(np.bool_(False)) is False


def test_sampled_units_build_a_keras_dense_layer():
    """The Keras 3 trap: Dense(np.int64(n)) is refused; a sampled value is a Python int and works."""
    from hpsearch.models.backend import keras

    with pytest.raises(ValueError, match="units"):
        keras.layers.Dense(np.int64(42))
    space = SearchSpace({"n_neurons": Int(8, 64), "widths": Categorical([[64, 32], [50, 50]])})
    for params in space.sample(3, seed=0):
        assert keras.layers.Dense(params["n_neurons"]).units == params["n_neurons"]
        assert [keras.layers.Dense(w).units for w in params["widths"]] == params["widths"]


# --- sample: RandomizedSearchCV's candidates -------------------------------------------------------

SPACE = {
    "n_hidden": Int(1, 3),
    "n_neurons": Int(4, 64),
    "learning_rate": Float(1e-4, 1e-1, log=True),
    "dropout": Float(0.0, 0.5),
    "activation": Categorical(["relu", "tanh", "selu"]),
    "widths": Categorical([[64, 32], [50, 50]]),
    "optimizer": Fixed("adam"),
}
# The same space written the way the chapter writes RandomizedSearchCV's param_distributions.
SCIPY = {
    "n_hidden": stats.randint(1, 4),
    "n_neurons": stats.randint(4, 65),
    "learning_rate": stats.loguniform(1e-4, 1e-1),
    "dropout": stats.uniform(0.0, 0.5),
    "activation": ["relu", "tanh", "selu"],
    "widths": [[64, 32], [50, 50]],
    "optimizer": ["adam"],
}


@pytest.mark.parametrize("seed", [0, 42, 2024])
def test_sample_matches_parameter_sampler(seed):
    ours = list(SearchSpace(SPACE).sample(25, seed))
    theirs = list(ParameterSampler(SCIPY, n_iter=25, random_state=seed))
    assert len(ours) == 25
    assert ours == theirs  # same draws, same order (numpy scalars compare equal to their values)


def test_to_scipy_maps_dimensions_to_equivalent_distributions():
    assert to_scipy(Categorical(["a", "b"])) == ["a", "b"]
    assert to_scipy(Fixed(3)) == [3]
    assert to_scipy(Int(0, 100, step=25)) == [0, 25, 50, 75, 100]
    assert to_scipy(Float(0.0, 1.0, step=0.25)) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert to_scipy(Float(0.5, 0.5)) == [0.5]
    assert to_scipy(Int(4, 64)).support() == (4, 64)  # randint(4, 65): both ends included
    loguniform = to_scipy(Float(1e-4, 1e-1, log=True))
    assert loguniform.support() == pytest.approx((1e-4, 1e-1))


def test_sample_is_reproducible_and_depends_on_the_seed():
    space = SearchSpace(SPACE)
    first = list(space.sample(10, seed=7))
    assert first == list(space.sample(10, seed=7))
    assert first != list(space.sample(10, seed=8))


def test_sample_stays_within_bounds_with_python_types():
    space = SearchSpace({
        "n": Int(4, 16), "big": Int(1, 1000, log=True), "stepped": Int(0, 100, step=20),
        "lr": Float(1e-4, 1e-1, log=True), "u": Float(-1.0, 1.0), "q": Float(0.0, 1.0, step=0.25),
        "act": Categorical(["relu", "tanh"]), "flag": Categorical([True, False]), "fixed": Fixed(np.int64(5)),
    })
    candidates = list(space.sample(300, seed=3))
    assert len(candidates) == 300
    for params in candidates:
        assert type(params["n"]) is int and 4 <= params["n"] <= 16
        assert type(params["big"]) is int and 1 <= params["big"] <= 1000
        assert type(params["stepped"]) is int and params["stepped"] in (0, 20, 40, 60, 80, 100)
        assert type(params["lr"]) is float and 1e-4 <= params["lr"] <= 1e-1
        assert type(params["u"]) is float and -1.0 <= params["u"] <= 1.0
        assert params["q"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert params["act"] in ("relu", "tanh")
        assert type(params["flag"]) is bool
        assert params["fixed"] == 5 and type(params["fixed"]) is int
        assert python_types_only(params)
    # every integer value is reachable, both ends included
    assert {p["n"] for p in candidates} == set(range(4, 17))
    assert {p["stepped"] for p in candidates} == {0, 20, 40, 60, 80, 100}


def test_log_uniform_samples_spread_across_decades():
    space = SearchSpace({"lr": Float(1e-4, 1e-1, log=True)})
    values = np.array([p["lr"] for p in space.sample(2000, seed=0)])
    decades = np.histogram(np.log10(values), bins=[-4, -3, -2, -1])[0] / len(values)
    assert decades == pytest.approx([1 / 3] * 3, abs=0.05)
    # a linear range over the same bounds puts ~90% of its samples in the top decade
    linear = np.array([p["lr"] for p in SearchSpace({"lr": Float(1e-4, 1e-1)}).sample(2000, seed=0)])
    assert np.mean(linear >= 1e-2) > 0.85


def test_log_int_samples_favour_small_values():
    values = np.array([p["n"] for p in SearchSpace({"n": Int(1, 1000, log=True)}).sample(2000, seed=0)])
    assert values.min() >= 1 and values.max() <= 1000
    assert 0.25 < np.mean(values < 10) < 0.42  # ~1/3 below 10, where a uniform draw puts 1%


def test_sample_of_a_finite_space_draws_without_replacement_like_sklearn():
    space = SearchSpace({"act": Categorical(["relu", "tanh"]), "n": Categorical([1, 2])})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sklearn: "the total space ... is smaller than n_iter"
        candidates = list(space.sample(10, seed=0))
    assert len(candidates) == 4
    def key(params):
        return sorted(params.items())

    assert sorted(map(key, candidates)) == sorted(map(key, ParameterGrid({"act": ["relu", "tanh"], "n": [1, 2]})))


def test_defaults_and_describe():
    space = SearchSpace(SPACE)
    assert space.defaults()["optimizer"] == "adam"
    described = space.describe()
    assert set(described) == set(SPACE)
    assert "log=True" in described["learning_rate"]


# --- grid ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dim", "points", "expected"), [
    (Int(1, 3), 5, [1, 2, 3]),  # fewer values than points: all of them
    (Int(2, 4), 3, [2, 3, 4]),
    (Int(0, 100), 3, [0, 50, 100]),
    (Int(0, 100, step=25), 5, [0, 25, 50, 75, 100]),
    (Int(1, 1000, log=True), 4, [1, 10, 100, 1000]),
    (Float(0.0, 1.0), 3, [0.0, 0.5, 1.0]),
    (Float(0.0, 1.0, step=0.25), 10, [0.0, 0.25, 0.5, 0.75, 1.0]),
    (Float(0.0, 1.0, step=0.25), 3, [0.0, 0.5, 1.0]),
    (Float(0.5, 0.5), 3, [0.5]),
    (Categorical(["relu", "tanh", "selu"]), 2, ["relu", "tanh", "selu"]),  # all choices, whatever points
    (Categorical([[64, 32], [50, 50]]), 5, [[64, 32], [50, 50]]),
    (Fixed("adam"), 4, ["adam"]),
], ids=str)
def test_to_grid_values(dim, points, expected):
    values = to_grid(dim, points)
    assert values == pytest.approx(expected) if isinstance(dim, Float) else values == expected
    assert python_types_only(values)


def test_log_float_grid_is_geometric():
    values = to_grid(Float(1e-4, 1e-1, log=True), 4)
    assert values == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
    ratios = np.array(values[1:]) / np.array(values[:-1])
    assert ratios == pytest.approx([10.0] * 3)
    assert all(type(v) is float for v in values)


@pytest.mark.parametrize(("dim", "points"), [(Int(0, 100, step=10), 4), (Int(0, 95, step=10), 3)], ids=str)
def test_stepped_int_grid_stays_on_the_step(dim, points):
    allowed = set(range(dim.low, dim.high + 1, dim.step))
    values = to_grid(dim, points)
    assert len(values) == points
    assert set(values) <= allowed, f"{values} are not all in {sorted(allowed)}"


def test_grid_size_order_and_types():
    space = SearchSpace({"n_hidden": Int(1, 3), "lr": Float(1e-3, 1e-1, log=True),
                         "act": Categorical(["relu", "tanh"]), "optimizer": Fixed("adam")})
    assert space.grid_size(3) == 3 * 3 * 2 * 1
    candidates = list(space.grid(3))
    assert len(candidates) == 18
    expected = ParameterGrid({"n_hidden": [1, 2, 3], "lr": to_grid(Float(1e-3, 1e-1, log=True), 3),
                              "act": ["relu", "tanh"], "optimizer": ["adam"]})
    assert candidates == list(expected)  # GridSearchCV's order
    assert len({repr(sorted(c.items())) for c in candidates}) == 18
    for params in candidates:
        assert type(params["n_hidden"]) is int
        assert type(params["lr"]) is float
        assert params["optimizer"] == "adam"


def test_grid_of_an_empty_space_is_one_empty_candidate():
    assert list(SearchSpace({}).grid(3)) == [{}]
    assert SearchSpace({}).grid_size(3) == 1


# --- suggest: a real Optuna trial ------------------------------------------------------------------


def _trials(n: int, seed: int = 0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))  # in-memory storage
    return [study.ask() for _ in range(n)]


def test_suggest_stays_in_range_and_respects_log_and_step():
    space = SearchSpace({
        "n_neurons": Int(4, 64), "big": Int(1, 1000, log=True), "stepped": Int(0, 100, step=10),
        "lr": Float(1e-4, 1e-1, log=True), "dropout": Float(0.0, 0.5), "q": Float(0.0, 1.0, step=0.25),
        "act": Categorical(["relu", "tanh"]), "optimizer": Fixed("adam"),
    })
    for trial in _trials(40):
        params = space.suggest(trial)
        assert type(params["n_neurons"]) is int and 4 <= params["n_neurons"] <= 64
        assert type(params["big"]) is int and 1 <= params["big"] <= 1000
        assert params["stepped"] in range(0, 101, 10)
        assert type(params["lr"]) is float and 1e-4 <= params["lr"] <= 1e-1
        assert 0.0 <= params["dropout"] <= 0.5
        assert params["q"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert params["act"] in ("relu", "tanh")
        assert params["optimizer"] == "adam"
        assert python_types_only(params)
        dists = trial.distributions
        assert dists["big"].log and dists["lr"].log and not dists["dropout"].log
        assert dists["stepped"].step == 10 and dists["q"].step == 0.25
        assert (dists["n_neurons"].low, dists["n_neurons"].high) == (4, 64)
        assert "optimizer" not in trial.params  # fixed values are not searched


def test_suggest_log_float_covers_decades():
    space = SearchSpace({"lr": Float(1e-4, 1e-1, log=True)})
    values = np.array([space.suggest(t)["lr"] for t in _trials(300)])
    decades = np.histogram(np.log10(values), bins=[-4, -3, -2, -1])[0]
    assert all(count > 60 for count in decades), decades


def test_suggest_categorical_of_lists_returns_the_list():
    choices = [[64, 32], [50, 50]]
    space = SearchSpace({"n_neurons": Categorical(choices), "act": Categorical(["relu", "tanh"])})
    seen = []
    for trial in _trials(20):
        params = space.suggest(trial)
        assert params["n_neurons"] in choices
        assert isinstance(params["n_neurons"], list)
        # Optuna stored a primitive (the index), not the list itself
        assert trial.params["n_neurons__index"] in (0, 1)
        assert choices[trial.params["n_neurons__index"]] == params["n_neurons"]
        assert "n_neurons" not in trial.params
        assert trial.params["act"] == params["act"]  # primitive choices are suggested directly
        seen.append(params["n_neurons"])
    assert all(c in seen for c in choices)


def test_suggest_mixed_primitive_categorical_and_none():
    space = SearchSpace({"loss": Categorical([None, "huber", "mse"]), "flag": Categorical([True, False])})
    for trial in _trials(10):
        params = space.suggest(trial)
        assert params["loss"] in (None, "huber", "mse")
        assert type(params["flag"]) is bool
        assert trial.params["loss"] == params["loss"]
