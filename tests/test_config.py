"""Tests for hpsearch.config: the study schema, defaults, YAML loading, ``--set`` overrides and error messages.

Every error is a :class:`ConfigError` whose text names the offending field (and the file it came from).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from conftest import tiny_study, write_study

from hpsearch.config.loading import apply_overrides, load_study, parse_study
from hpsearch.config.schema import DEFAULT_OPTUNA_STORAGE, StudyConfig
from hpsearch.errors import ConfigError, HpsearchError
from hpsearch.space.dimensions import Categorical, Fixed, Float, Int

MINIMAL = {"name": "minimal", "data": {"dataset": "iris"}}


def error_of(raw, source: str = "study") -> str:
    with pytest.raises(ConfigError) as info:
        parse_study(raw, source=source)
    return str(info.value)


# --- defaults --------------------------------------------------------------------------------------


def test_defaults(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("HPSEARCH_STORAGE", raising=False)
    study = parse_study(copy.deepcopy(MINIMAL))
    assert isinstance(study, StudyConfig)
    assert study.seed == 42
    assert study.search.cv is None and study.search.strategy == "optuna"  # the defaults that won (RESULTS.md)
    assert study.search.pruner == "none" and study.search.final == "auto"  # the ablation's winner
    assert study.search.n_trials == 10
    assert study.search.scoring is None
    assert study.search.space == {}
    assert study.search.storage == DEFAULT_OPTUNA_STORAGE
    assert study.model.factory == "mlp" and study.model.params == {}
    assert study.training.epochs == 100 and study.training.batch_size == 32
    early = study.training.early_stopping
    assert early is not None
    assert early.patience == 10
    assert early.restore_best_weights is True
    assert early.monitor == "val_loss"
    assert study.data.test_size == 0.25 and study.data.valid_size == 0.25 and study.data.scale == "standard"
    assert study.tracking.resolved_uri() == f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    assert study.experiment_name == "minimal"


def test_tracking_uri_precedence(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert parse_study(copy.deepcopy(MINIMAL)).tracking.resolved_uri() == "http://127.0.0.1:5999"
    study = parse_study({**MINIMAL, "tracking": {"uri": "sqlite:///other.db", "experiment": "exp"}})
    assert study.tracking.resolved_uri() == f"sqlite:///{Path.cwd() / 'other.db'}"  # made absolute
    assert study.experiment_name == "exp"


def test_storage_precedence_set_then_file_then_environment_then_default(tmp_path, monkeypatch):
    monkeypatch.delenv("HPSEARCH_STORAGE", raising=False)
    assert parse_study(copy.deepcopy(MINIMAL)).search.storage == DEFAULT_OPTUNA_STORAGE
    env_url = "postgresql://hp:secret@postgres:5432/optuna"
    monkeypatch.setenv("HPSEARCH_STORAGE", env_url)
    assert parse_study(copy.deepcopy(MINIMAL)).search.storage == env_url  # the file does not set it
    assert parse_study({**MINIMAL, "search": {"strategy": "optuna"}}).search.storage == env_url
    in_file = {**MINIMAL, "search": {"storage": "sqlite:///file.db"}}
    assert parse_study(copy.deepcopy(in_file)).search.storage == "sqlite:///file.db"
    assert parse_study({**MINIMAL, "search": {"storage": None}}).search.storage is None  # explicit: in memory
    path = write_study(tmp_path, in_file)
    assert load_study(path, ["search.storage=sqlite:///set.db"]).search.storage == "sqlite:///set.db"
    assert load_study(path, ["search.storage=null"]).search.storage is None
    monkeypatch.setenv("HPSEARCH_STORAGE", "")  # empty = unset
    assert parse_study(copy.deepcopy(MINIMAL)).search.storage == DEFAULT_OPTUNA_STORAGE


def test_tiny_study_parses_into_dimensions():
    study = parse_study(tiny_study())
    assert study.search.space == {"n_neurons": Int(4, 16), "learning_rate": Float(1e-3, 1e-2, log=True)}
    assert study.training.early_stopping.patience == 2
    assert study.training.early_stopping.restore_best_weights is True


def test_space_forms_in_a_study():
    study = parse_study(tiny_study(search__space={
        "n_hidden": {"int": [1, 3]}, "activation": ["relu", "tanh"], "n_neurons": [[64, 32], [50, 50]],
        "optimizer": "adam", "dropout": {"fixed": 0.2}}, model__params={}))
    assert study.search.space == {
        "n_hidden": Int(1, 3), "activation": Categorical(["relu", "tanh"]),
        "n_neurons": Categorical([[64, 32], [50, 50]]), "optimizer": Fixed("adam"), "dropout": Fixed(0.2)}
    assert parse_study(tiny_study(search__space=None)).search.space == {}


@pytest.mark.parametrize(("value", "patience"), [(True, 10), ({}, 10), ({"patience": 3}, 3)])
def test_early_stopping_on(value, patience):
    early = parse_study(tiny_study(training__early_stopping=value)).training.early_stopping
    assert early is not None and early.patience == patience and early.restore_best_weights is True


@pytest.mark.parametrize("value", [False, None])
def test_early_stopping_off(value):
    assert parse_study(tiny_study(training__early_stopping=value)).training.early_stopping is None


# --- unknown keys, wrong types, missing fields -----------------------------------------------------


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"nmae": "x"}, "nmae: unknown key (did you mean 'name'?)"),
    ({"seeed": 1}, "seeed: unknown key (did you mean 'seed'?)"),
    ({"search__n_trails": 3}, "search.n_trails: unknown key (did you mean 'n_trials'?)"),
    ({"search__stratgy": "grid"}, "search.stratgy: unknown key (did you mean 'strategy'?)"),
    ({"data__targte": "y"}, "data.targte: unknown key (did you mean 'target'?)"),
    ({"training__epoch": 3}, "training.epoch: unknown key (did you mean 'epochs'?)"),
    ({"training__early_stopping__patiense": 3},
     "training.early_stopping.patiense: unknown key (did you mean 'patience'?)"),
    ({"tracking__urii": "sqlite:///x.db"}, "tracking.urii: unknown key (did you mean 'uri'?)"),
    ({"model__parms": {}}, "model.parms: unknown key (did you mean 'params'?)"),
], ids=lambda v: next(iter(v)) if isinstance(v, dict) else None)
def test_unknown_keys_suggest_the_closest(overrides, expected):
    assert expected in error_of(tiny_study(**overrides))


def test_unknown_key_without_a_close_match_has_no_suggestion():
    message = error_of(tiny_study(data__colour="blue"))
    assert "data.colour: unknown key" in message
    assert "did you mean" not in message


@pytest.mark.parametrize(("overrides", "field", "shown"), [
    ({"search__n_trials": "many"}, "search.n_trials", "'many'"),
    ({"search__n_trials": 0}, "search.n_trials", "0"),
    ({"search__cv": 1}, "search.cv", "1"),
    ({"search__strategy": "bayes"}, "search.strategy", "'bayes'"),
    ({"search__grid_points": 1.5}, "search.grid_points", "1.5"),
    ({"training__epochs": -5}, "training.epochs", "-5"),
    ({"training__batch_size": "big"}, "training.batch_size", "'big'"),
    ({"training__early_stopping__patience": 0}, "training.early_stopping.patience", "0"),
    ({"data__test_size": 1.5}, "data.test_size", "1.5"),
    ({"data__scale": "robust"}, "data.scale", "'robust'"),
    ({"data__max_rows": 5}, "data.max_rows", "5"),
    ({"seed": -1}, "seed", "-1"),
    ({"model__params": ["adam"]}, "model.params", "['adam']"),
    ({"search": "random"}, "search", "'random'"),
], ids=lambda v: next(iter(v)) if isinstance(v, dict) else None)
def test_wrong_types_name_the_field(overrides, field, shown):
    message = error_of(tiny_study(**overrides))
    assert f"{field}: " in message
    assert f"(got {shown})" in message


def test_every_bad_field_is_named():
    message = error_of(tiny_study(search__n_trials="many", training__epochs=0, nmae="x"))
    for field in ("search.n_trials", "training.epochs", "nmae"):
        assert field in message


@pytest.mark.parametrize(("raw", "expected"), [
    ({"data": {"dataset": "iris"}}, "name: required field is missing"),
    ({"name": "x"}, "data: required field is missing"),
    ({"name": "x", "data": {}}, "give either data.dataset"),
    ({"name": "x", "data": {"dataset": "iris", "path": "d.csv"}}, "not both"),
], ids=["name", "data", "no-source", "two-sources"])
def test_missing_and_conflicting_fields(raw, expected):
    assert expected in error_of(raw)


def test_source_names_the_file():
    assert error_of(tiny_study(nmae="x"), source="studies/mine.yaml").startswith(
        "studies/mine.yaml is not a valid study")


def test_config_error_is_a_user_error():
    with pytest.raises(HpsearchError) as info:
        parse_study(tiny_study(search__cv=1))
    assert info.value.exit_code == 2


# --- search.space errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(("space", "expected"), [
    ({"activation": {"categorical": []}}, "activation: categorical needs a non-empty list"),
    ({"activation": []}, "activation: categorical needs a non-empty list"),
    ({"n_neurons": {"int": [16, 4]}}, "n_neurons: the range [16, 4] is inverted"),
    ({"learning_rate": {"float": [0, 0.1], "log": True}}, "learning_rate: a log range needs low > 0"),
    ({"n_hidden": {"int": ["one", 3]}}, "n_hidden: bounds must be numbers"),
    ({"n_hidden": {"int": [1.5, 3]}}, "n_hidden: int bounds must be whole numbers"),
    ({"n_hidden": {"int": [1, 3], "logg": True}}, "n_hidden: unknown option(s) ['logg']"),
    ({"n_hidden": {"int": [1, 3], "float": [1, 3]}}, "n_hidden: expected exactly one of"),
    ("n_hidden", "unknown preset space 'n_hidden'"),
    (["n_hidden"], "expected a mapping of parameter names to ranges"),
], ids=str)
def test_space_errors_name_the_parameter(space, expected):
    message = error_of(tiny_study(search__space=space))
    assert "search.space: " in message
    assert expected in message


# --- cross-field checks ----------------------------------------------------------------------------


def test_holdout_without_validation_rows_is_refused():
    message = error_of(tiny_study(search__cv=None, data__valid_size=0))
    assert "search.cv is null" in message and "data.valid_size is 0" in message


def test_holdout_with_validation_rows_is_accepted():
    study = parse_study(tiny_study(search__cv=None, data__valid_size=0.2))
    assert study.search.cv is None
    assert parse_study(tiny_study(data__valid_size=0)).data.valid_size == 0  # cv without a valid split is fine


def test_param_both_fixed_and_searched_is_refused():
    message = error_of(tiny_study(model__params={"optimizer": "adam", "n_neurons": 32}))
    assert "['n_neurons']" in message
    assert "model.params" in message and "search.space" in message


@pytest.mark.parametrize(("scoring", "suggestion"), [
    ("accuracyy", "accuracy"),
    ("neg_mean_squared_eror", "neg_mean_squared_error"),
    ("roc-auc", "roc_auc"),
])
def test_unknown_scoring_suggests_the_closest(scoring, suggestion):
    message = error_of(tiny_study(search__scoring=scoring))
    assert f"search.scoring: unknown scorer {scoring!r} (did you mean {suggestion!r}?)" in message


@pytest.mark.parametrize("scoring", ["accuracy", "neg_mean_squared_error", "roc_auc", "f1_macro"])
def test_known_scoring_is_accepted(scoring):
    assert parse_study(tiny_study(search__scoring=scoring)).search.scoring == scoring


@pytest.mark.parametrize("name", ["bad name", "-leading-dash", "", "a/b", "a:b", "x" * 101, "emoji-\U0001F600"])
def test_invalid_study_names(name):
    message = error_of(tiny_study(name=name))
    assert "name: a study name is 1 to 100 letters (of any alphabet), digits, '_', '.' or '-'" in message
    assert repr(name)[:60] in message and "pattern" not in message


@pytest.mark.parametrize("name", ["tiny", "my-study_1.v2", "2024", "x" * 100, "études-ü", "研究1"])
def test_valid_study_names(name):
    assert parse_study(tiny_study(name=name)).name == name


@pytest.mark.parametrize("factory", ["pkg:", ":build", "pkg.mod:not-an-identifier", "pkg..mod:build"])
def test_malformed_factory_reference(factory):
    message = error_of(tiny_study(model__factory=factory))
    assert "model.factory: expected a builtin name or 'package.module:function'" in message


def test_factory_reference_forms_are_accepted():
    assert parse_study(tiny_study(model__factory="my_pkg.models:build_model")).model.factory == \
        "my_pkg.models:build_model"
    assert parse_study(tiny_study(model__factory="mlpp")).model.factory == "mlpp"  # resolved (and refused) later


# --- --set overrides -------------------------------------------------------------------------------


@pytest.mark.parametrize(("override", "path", "value"), [
    ("search.n_trials=25", ("search", "n_trials"), 25),
    ("model.params.learning_rate=3.0e-4", ("model", "params", "learning_rate"), 3.0e-4),
    ("data.test_size=0.3", ("data", "test_size"), 0.3),
    ("tracking.log_models=false", ("tracking", "log_models"), False),
    ("training.early_stopping=true", ("training", "early_stopping"), True),
    ("model.params.l2=3e-4", ("model", "params", "l2"), 3e-4),
    ("search.cv=null", ("search", "cv"), None),
    ("search.cv=", ("search", "cv"), None),
    ("search.space.activation=[relu, tanh]", ("search", "space", "activation"), ["relu", "tanh"]),
    ("search.space.n_hidden={int: [1, 3]}", ("search", "space", "n_hidden"), {"int": [1, 3]}),
    ("search.strategy=optuna", ("search", "strategy"), "optuna"),
    ("name=with=equals", ("name",), "with=equals"),
    ("name=[unclosed", ("name",), "[unclosed"),  # not YAML: kept as text
])
def test_set_parses_yaml_values(override, path, value):
    raw = apply_overrides(tiny_study(), [override])
    node = raw
    for part in path:
        node = node[part]
    assert node == value
    assert type(node) is type(value)


def test_set_creates_nested_keys_and_keeps_the_rest():
    raw = apply_overrides({"name": "x", "data": {"dataset": "iris"}},
                          ["tracking.experiment=exp", "search.space.lr={float: [1.0e-4, 1.0e-2], log: true}",
                           "training.early_stopping.patience=4"])
    assert raw["tracking"] == {"experiment": "exp"}
    assert raw["search"] == {"space": {"lr": {"float": [1e-4, 1e-2], "log": True}}}
    assert raw["training"] == {"early_stopping": {"patience": 4}}
    assert raw["data"] == {"dataset": "iris"}
    study = parse_study(raw)
    assert study.search.space["lr"] == Float(1e-4, 1e-2, log=True)
    assert study.training.early_stopping.patience == 4


def test_set_applies_in_order():
    assert apply_overrides({}, ["seed=1", "seed=2"]) == {"seed": 2}


@pytest.mark.parametrize("override", ["search.n_trials", "=5", ""])
def test_set_without_key_or_equals_is_refused(override):
    with pytest.raises(ConfigError, match="--set expects key.path=value") as info:
        apply_overrides(tiny_study(), [override])
    assert repr(override) in str(info.value)


def test_set_through_a_non_mapping_is_refused():
    with pytest.raises(ConfigError) as info:
        apply_overrides(tiny_study(), ["name.first=x"])
    message = str(info.value)
    assert message.startswith("name.first: ")
    assert "'name' is not a mapping" in message


# --- load_study: files ----------------------------------------------------------------------------


def test_load_study_reads_and_overrides(tmp_path):
    path = write_study(tmp_path, tiny_study())
    study = load_study(path, ["search.n_trials=7", "search.strategy=grid", "model.params.l2=3.0e-4"])
    assert study.search.n_trials == 7 and study.search.strategy == "grid"
    assert study.model.params["l2"] == pytest.approx(3e-4)
    assert load_study(str(path)).search.n_trials == 2  # the file itself is untouched


def test_load_study_validates_overrides_and_names_the_file(tmp_path):
    path = write_study(tmp_path, tiny_study())
    with pytest.raises(ConfigError) as info:
        load_study(path, ["search.n_trails=3"])
    message = str(info.value)
    assert str(path) in message
    assert "search.n_trails: unknown key (did you mean 'n_trials'?)" in message


def test_the_shipped_quickstart_study_is_valid():
    path = Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml"
    if not path.is_file():
        pytest.skip("studies/quickstart.yaml is absent")
    study = load_study(path)
    assert study.search.space["learning_rate"].log is True


@pytest.mark.parametrize(("text", "line"), [
    ("name: tiny\ndata: {dataset: iris\nseed: 1\n", None),  # unclosed flow mapping
    ("name: tiny\ndata:\n  dataset: iris\n   scale: none\n", 4),  # bad indentation
    ("name: tiny\n\tseed: 1\n", 2),  # a tab
    ("name: [tiny\n", None),
])
def test_malformed_yaml_names_the_file_and_line(tmp_path, text, line):
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_study(path)
    message = str(info.value)
    assert str(path) in message
    assert "is not valid YAML at line " in message
    if line is not None:
        assert f"at line {line}," in message


@pytest.mark.parametrize(("text", "kind"), [
    ("- name: tiny\n- data: iris\n", "list"),
    ("just some text\n", "str"),
    ("42\n", "int"),
    ("", "NoneType"),
    ("# only a comment\n", "NoneType"),
])
def test_a_yaml_document_that_is_not_a_mapping(tmp_path, text, kind):
    path = tmp_path / "study.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_study(path, ["search.n_trials=3"])  # overrides cannot apply either; still a clear error
    message = str(info.value)
    assert message.startswith(f"{path} must be a YAML mapping")
    assert f"got {kind}" in message


def test_missing_study_file(tmp_path):
    path = tmp_path / "nowhere" / "study.yaml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_study(path)
    assert str(path) in str(info.value)


def test_a_directory_is_not_a_study_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_study(tmp_path)


def test_non_utf8_study_file(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_study(path)
    assert str(path) in str(info.value)


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\ndata: {dataset: iris}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_study(path)


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    """YAML 1.2 floats: ``1e-3`` is a float (PyYAML's 1.1 rules would give the string '1e-3', which Keras refuses)."""
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(tiny_study(search__space={}), sort_keys=False).replace(
        "params:\n    optimizer: adam", "params:\n    optimizer: adam\n    learning_rate: 1e-3"), encoding="utf-8")
    assert "learning_rate: 1e-3\n" in path.read_text(encoding="utf-8")
    study = load_study(path, ["search.space.dropout={float: [1e-4, 1e-2]}", "training.early_stopping.min_delta=1e-4",
                              "search.space.n_neurons={int: [1, 1e3]}"])
    assert study.model.params["learning_rate"] == 1e-3
    assert type(study.model.params["learning_rate"]) is float
    assert study.search.space["dropout"] == Float(1e-4, 1e-2)
    assert study.search.space["n_neurons"] == Int(1, 1000)
    assert study.training.early_stopping.min_delta == 1e-4
    assert yaml.safe_load("x: 1e-3") == {"x": "1e-3"}  # the project's loader does not change PyYAML's own
