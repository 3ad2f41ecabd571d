"""The command line's promise for bad input: one clear message naming the field or file, exit code 2,
no traceback, and (for ``run``) nothing written in the working folder.

Each case runs ``hpsearch check|run study.yaml`` in an empty folder, offline, with MLFLOW_TRACKING_URI
unset (so a ``run`` would record in ./mlflow.db). No case trains: every bad input must be refused before
the first model is built. A few cases run as real ``python -m hpsearch`` subprocesses (the exit code and
output a shell sees); the rest call the same ``main()`` in-process, which saves a TensorFlow start-up each.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_study, write_study

REPO = Path(__file__).resolve().parents[1]
WRITES = ("mlflow.db", "mlartifacts", "optuna.db", "mlruns")


def write_csv(folder: Path, n: int = 12, name: str = "data.csv") -> Path:
    """A small regression csv: columns a, b and the target y."""
    rng = np.random.default_rng(0)
    path = folder / name
    pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "y": rng.normal(size=n)}).to_csv(path, index=False)
    return path


SUBPROCESS_CASES = {"malformed-yaml", "unknown-factory", "missing-csv", "bad-optuna-storage", "set-without-equals"}


def run_in_process(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``main(args)`` in ``cwd``, its exit code and output in the shape ``subprocess.run`` gives."""
    import contextlib
    import io

    from hpsearch import cli

    previous, out, err = os.getcwd(), io.StringIO(), io.StringIO()
    saved_uri = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(list(args))
    finally:
        os.chdir(previous)
        if saved_uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved_uri
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["HPSEARCH_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "hpsearch", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


CSV_DATA = {"path": "data.csv", "target": "y", "test_size": 0.2, "valid_size": 0.2}

CASES = [
    pytest.param("check", "name: tiny\ndata: {dataset: breast_cancer\nseed: 1\n", [],
                 ["study.yaml is not valid YAML at line"], id="malformed-yaml"),
    pytest.param("check", tiny_study(search__n_trails=3), [],
                 ["search.n_trails: unknown key", "did you mean 'n_trials'?"], id="misspelled-key"),
    pytest.param("run", tiny_study(search__n_trials="many"), [],
                 ["search.n_trials", "'many'"], id="wrong-type"),
    pytest.param("run", tiny_study(search__space={"activation": {"categorical": []}}), [],
                 ["search.space", "activation", "non-empty list"], id="empty-categorical"),
    pytest.param("run", tiny_study(search__space={"n_neurons": {"int": [16, 4]}}), [],
                 ["search.space", "n_neurons", "inverted"], id="inverted-range"),
    pytest.param("check", tiny_study(search__space={"learning_rate": {"float": [0, 0.1], "log": True}}), [],
                 ["search.space", "learning_rate", "low > 0"], id="log-range-low-zero"),
    pytest.param("run", tiny_study(model__factory="mlpp"), [],
                 ["model.factory", "'mlpp'", "did you mean 'mlp'?"], id="unknown-factory"),
    pytest.param("run", tiny_study(model__factory="nosuch_pkg.models:build_model"), [],
                 ["model.factory", "cannot import module 'nosuch_pkg.models'"], id="factory-not-importable"),
    pytest.param("run", tiny_study(search__space={"n_neuron": {"int": [4, 16]}}), [],
                 ["search.space.n_neuron", "not a parameter of the model factory", "did you mean 'n_neurons'?"],
                 id="space-key-not-a-factory-param"),
    pytest.param("run", tiny_study(data__dataset="breast_cancr"), [],
                 ["data.dataset", "'breast_cancr'", "(did you mean 'breast_cancer'?)"], id="unknown-dataset"),
    pytest.param("run", tiny_study(data={"path": "missing.csv", "target": "y"}), [],
                 ["missing.csv", "does not exist", "data.path"], id="missing-csv"),
    pytest.param("check", tiny_study(data={**CSV_DATA, "target": "price"}), [],
                 ["data.target", "'price' not found", "data.csv"], id="missing-target-column"),
    pytest.param("check", tiny_study(data=CSV_DATA, search__cv=20), [],
                 ["search.cv"], id="fewer-rows-than-folds-check"),
    pytest.param("run", tiny_study(data=CSV_DATA, search__cv=20), [],
                 ["search.cv"], id="fewer-rows-than-folds-run"),
    pytest.param("run", tiny_study(search__strategy="optuna", search__storage="nosuchdb://user:secret@localhost/x"), [],
                 ["search.storage", "nosuchdb://user:***@localhost/x"], id="bad-optuna-storage"),
    pytest.param("run", tiny_study(), ["--set", "search.n_trials"],
                 ["--set expects key.path=value", "'search.n_trials'"], id="set-without-equals"),
]


@pytest.mark.parametrize(("command", "study", "extra", "expected"), CASES)
def test_bad_input_is_a_clear_error(tmp_path, request, command, study, extra, expected):
    write_csv(tmp_path)  # present for every case; only the csv cases point at it
    if isinstance(study, str):
        (tmp_path / "study.yaml").write_text(study, encoding="utf-8")
    else:
        write_study(tmp_path, study)
    before = set(os.listdir(tmp_path))

    case = request.node.callspec.id
    runner = run_cli if case in SUBPROCESS_CASES else run_in_process
    result = runner(tmp_path, command, "study.yaml", *extra)

    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 2, f"exit code {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.stderr.startswith("error: "), result.stderr
    message = " ".join(result.stderr.split())  # immune to terminal-width wrapping
    for text in expected:
        assert text in message, f"{text!r} not in stderr: {result.stderr}"
    assert "secret" not in output  # credentials in URLs are masked
    written = [name for name in WRITES if (tmp_path / name).exists()]
    assert not written, f"{command} left {written} behind after refusing the study"
    assert set(os.listdir(tmp_path)) == before, "the working folder changed"


def test_check_accepts_a_good_study_without_writing(tmp_path):
    """The other side of the contract: a valid study passes ``check`` (exit 0) and nothing is written."""
    write_csv(tmp_path, n=40)
    write_study(tmp_path, tiny_study(data=CSV_DATA))
    result = run_cli(tmp_path, "check", "study.yaml", "--set", "search.n_trials=3")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    summary = " ".join(result.stdout.split())  # rich wraps at the console width
    assert "ok study.yaml" in summary
    assert "regression" in summary and "3 trial(s)" in summary
    assert sorted(os.listdir(tmp_path)) == ["data.csv", "study.yaml"]
