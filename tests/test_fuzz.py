"""Fuzzing the study-file loader (issue #7, part 1): whatever a user feeds it, hpsearch ends in a valid study
or in one clear error — exit code 2, the field or file named, no traceback, nothing written.

Random YAML documents, and random mutations of every shipped study (types swapped, keys dropped or misspelled,
ranges inverted, huge and negative numbers, unicode, deep nesting, ``--set`` overrides), go through
:func:`hpsearch.config.loading.load_study` and through ``hpsearch check`` in-process. Nothing trains.

CI runs the bounded ``ci`` profile (well under a minute); ``HYPOTHESIS_PROFILE=long python -m pytest -q
tests/test_fuzz.py`` runs the long one on demand.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpsearch import cli
from hpsearch.config.loading import MAX_DEPTH, load_study, safe_load
from hpsearch.config.schema import StudyConfig
from hpsearch.errors import HpsearchError

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted((REPO / "studies").glob("*.yaml"))
WRITES = ("mlflow.db", "mlartifacts", "optuna.db", "mlruns")
FIELD = re.compile(r"\b(name|seed|preset|data|model|search|training|tracking|execution)\b|--set")
FIELD_NAMES = ["name", "seed", "preset", "data", "model", "search", "training", "tracking", "dataset", "path",
               "target", "test_size", "valid_size", "scale", "max_rows", "factory", "params", "max_params",
               "strategy", "n_trials", "cv", "space", "scoring", "grid_points", "sampler", "pruner", "storage",
               "epochs", "batch_size", "early_stopping", "patience", "class_weight", "uri", "experiment",
               "n_hidden", "n_neurons", "learning_rate", "int", "float", "log", "step", "categorical", "fixed"]

_HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=_HEALTH)
settings.register_profile("long", max_examples=3000, deadline=None, suppress_health_check=_HEALTH)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

# --- what users type -------------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # any unicode but lone surrogates
odd_numbers = st.sampled_from([0, -1, -10**9, 10**20, 2**63, 10**400, 1e308, -1e-308, 1e-300, 0.5, 1.5,
                               math.inf, -math.inf, math.nan])
scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | odd_numbers
           | st.floats(allow_nan=True, allow_infinity=True) | text | st.sampled_from(FIELD_NAMES))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(FIELD_NAMES) | text, inner, max_size=4), max_leaves=16)
documents = st.dictionaries(st.sampled_from(FIELD_NAMES) | text, values, max_size=8) | values


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a parsed document (dict keys and list indexes), the root included."""
    found = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            found += paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += paths(child, (*prefix, index))
    return found


def misspell(word: str, data: st.DataObject) -> str:
    position = data.draw(st.integers(0, len(word)))
    kind = data.draw(st.sampled_from(["drop", "insert", "swap", "case"]))
    if kind == "drop" and word:
        return word[:position] + word[position + 1:]
    if kind == "swap" and len(word) > 1:
        i = min(position, len(word) - 2)
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "case":
        return word.swapcase()
    return word[:position] + data.draw(st.characters(blacklist_categories=("Cs",))) + word[position:]


def mutate(document: Any, data: st.DataObject) -> Any:
    """One random mutation somewhere in ``document`` (changed in place where possible)."""
    path = data.draw(st.sampled_from(paths(document)), label="path")
    kind = data.draw(st.sampled_from(["drop", "misspell", "swap-type", "invert", "number", "unicode", "nest",
                                      "unknown-key"]), label="mutation")
    if not path:
        return data.draw(values) if kind == "swap-type" else document
    *parents, last = path
    parent = document
    for part in parents:
        parent = parent[part]
    value = parent[last]
    if kind == "drop":
        del parent[last]
    elif kind == "misspell" and isinstance(parent, dict) and isinstance(last, str):
        parent[misspell(last, data)] = parent.pop(last)
    elif kind == "invert" and isinstance(value, list):
        value.reverse()
    elif kind == "number":
        parent[last] = data.draw(odd_numbers)
    elif kind == "unicode":
        parent[last] = data.draw(st.sampled_from(["é", "名前", "🙂", "\u202e", "\x00", "a" * 5000, ""]) | text)
    elif kind == "nest":
        for _ in range(data.draw(st.integers(1, MAX_DEPTH + 5))):
            value = [value] if data.draw(st.booleans()) else {"a": value}
        parent[last] = value
    elif kind == "unknown-key" and isinstance(value, dict):
        value[data.draw(st.sampled_from(FIELD_NAMES) | text)] = data.draw(values)
    else:
        parent[last] = data.draw(values)
    return document


overrides = st.lists(st.builds(lambda keys, value: f"{'.'.join(keys)}={value}",
                               st.lists(st.sampled_from(FIELD_NAMES) | text, min_size=1, max_size=3),
                               st.sampled_from(["", "null", "3", "-1", "1e400", "[1, 2]", "{int: [5, 1]}", "x: [",
                                                "optuna", "true", "{{{"]) | text),
                     max_size=2)


# --- the contract ----------------------------------------------------------------------------------


def loaded(path: Path, extra: list[str]) -> StudyConfig | None:
    """The study, or None after a clear error; any other exception fails the test."""
    try:
        study = load_study(path, extra)
    except HpsearchError as exc:
        message = str(exc)
        assert message.strip() and "Traceback" not in message
        assert str(path) in message or FIELD.search(message), f"names no field or file: {message}"
        assert exc.exit_code == 2
        return None
    assert isinstance(study, StudyConfig)
    return study


def checked(path: Path, extra: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """``hpsearch check`` in-process: exit code and stderr; it must never raise."""
    capsys.readouterr()
    # "--set=-x" is not read as an option; building a user's factory is tested in test_cli_errors, not fuzzed
    args = ["check", str(path), "--no-build"] + [f"--set={item}" for item in extra]
    code = cli.main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err


def assert_contract(folder: Path, text: str | bytes, extra: list[str], capsys: pytest.CaptureFixture) -> None:
    path = folder / "study.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    study = loaded(path, extra)
    code, err = checked(path, extra, capsys)
    if study is None:
        assert code == 2, err
    else:
        assert code in (0, 2), err  # a valid file may still name data that cannot be loaded
    if code == 2:
        assert err.startswith("error: "), err
        assert "\n\n" not in err.strip(), f"more than one paragraph: {err}"
    assert not [name for name in WRITES if (Path.cwd() / name).exists()], "check wrote a store"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The study file's folder; the run itself happens in an empty working folder."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for name in ("MLFLOW_TRACKING_URI", "HPSEARCH_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@settings(settings.get_profile(PROFILE))
@given(document=documents)
def test_random_documents(folder, capsys, document):
    assert_contract(folder, yaml.safe_dump(document, allow_unicode=True), [], capsys)


@settings(settings.get_profile(PROFILE))
@given(raw=st.text(st.characters(blacklist_categories=("Cs",)), max_size=200) | st.binary(max_size=100))
def test_random_text_and_bytes(folder, capsys, raw):
    assert_contract(folder, raw, [], capsys)


@settings(settings.get_profile(PROFILE))
@given(study=st.sampled_from(STUDIES), data=st.data(), extra=overrides)
def test_mutated_shipped_studies(folder, capsys, study, data, extra):
    document = safe_load(study.read_text(encoding="utf-8"))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        document = mutate(document, data)
    assert_contract(folder, yaml.safe_dump(document, allow_unicode=True, sort_keys=False), extra, capsys)


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.name)
def test_every_shipped_study_loads(study):
    assert isinstance(load_study(study), StudyConfig)


@pytest.mark.parametrize(("text", "expected"), [
    ("name: x\ndata: {dataset: iris}\nseed: " + "[" * 2000 + "]" * 2000, "nested more than 40 levels deep"),
    ("name: x\ndata: {dataset: iris}\nmodel: {params: {a: &a [1, *a]}}", "the alias *a is inside the value it names"),
    ("name: x\ndata: {dataset: iris}\nx0: &x0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
     + "".join(f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 10)}]\n" for i in range(1, 8)),
     "more than 100000 values once its aliases are expanded"),  # "billion laughs"
], ids=["deep-nesting", "self-reference", "alias-bomb"])
def test_hostile_yaml_is_refused_at_once(folder, capsys, text, expected):
    path = folder / "study.yaml"
    path.write_text(text, encoding="utf-8")
    code, err = checked(path, [], capsys)
    assert code == 2 and expected in " ".join(err.split()) and str(path) in " ".join(err.split())
