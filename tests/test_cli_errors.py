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


def run_cli(cwd: Path, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["HPSEARCH_OFFLINE"] = "1"
    paths = [(extra_env or {}).get("PYTHONPATH"), str(REPO), env.get("PYTHONPATH")]
    env.update({**(extra_env or {}), "PYTHONPATH": os.pathsep.join(filter(None, paths))})
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
    # issue 24's second round
    pytest.param("run", tiny_study(search__strategy="optuna", tracking__uri="sqlite:///shared.db",
                                   search__storage="sqlite:///shared.db"), [],
                 ["search.storage", "tracking.uri and search.storage both point at", "cannot share one database"],
                 id="one-database-for-both-stores"),
    pytest.param("run", tiny_study(tracking__uri="sqlite:////proc/nope/mlflow.db"), [],
                 ["tracking.uri", "cannot create the database's folder /proc/nope"], id="tracking-folder-impossible"),
    pytest.param("check", tiny_study(search__storage="sqlite:////proc/nope/optuna.db"), [],
                 ["search.storage", "cannot create the database's folder /proc/nope"], id="storage-folder-impossible"),
    pytest.param("check", tiny_study(model__params={"optimizer": "sgdd"}), [],
                 ["model.params.optimizer", "'sgdd'", "did you mean 'sgd'?"], id="mlp-optimizer-misspelled"),
    pytest.param("check", tiny_study(search__space={"activation": {"categorical": ["relu", "relux"]}}), [],
                 ["search.space.activation", "'relux'", "did you mean 'relu'?"], id="mlp-activation-misspelled"),
    pytest.param("run", tiny_study(model__params={"optimizer": "adam", "loss": "binary_crossentropyy"}), [],
                 ["model.params.loss", "did you mean 'binary_crossentropy'?"], id="mlp-loss-misspelled"),
    pytest.param("check", tiny_study(model__params={"optimizer": "adam", "kernel_initializer": "he_normall"}), [],
                 ["model.params.kernel_initializer", "did you mean 'he_normal'?"], id="mlp-initializer-misspelled"),
    pytest.param("check", tiny_study(search__space={"output_activation": {"categorical": ["sigmoid", "sigmod"]}}),
                 [], ["search.space.output_activation", "'sigmod'", "did you mean 'sigmoid'?"],
                 id="mlp-output-activation-misspelled"),
    pytest.param("check", tiny_study(model__params={"optimizer": "adam", "metrics": ["accuracy", "auc_roc"]}), [],
                 ["model.params.metrics", "'auc_roc'"], id="mlp-metric-unknown"),
    pytest.param("check", tiny_study(data=CSV_DATA, search__scoring="roc_auc"), [],
                 ["search.scoring", "'roc_auc'", "classification, and the task is regression",
                  "neg_mean_squared_error"], id="classification-scorer-on-regression"),
    pytest.param("check", tiny_study(search__scoring="r2"), [],
                 ["search.scoring", "'r2'", "regression, and the task is binary", "accuracy"],
                 id="regression-scorer-on-classes"),
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


USER_FACTORY = '''
from hpsearch.models.backend import keras


def build_model(activation="relu", n_neurons=8):
    model = keras.Sequential([keras.Input(shape=(30,)), keras.layers.Dense(n_neurons, activation=activation),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam")
    return model
'''


def test_check_builds_a_users_factory_once_per_categorical_value(tmp_path):
    """A value the user's factory cannot build with is refused by ``check``, naming its field, before a trial."""
    (tmp_path / "my_models.py").write_text(USER_FACTORY, encoding="utf-8")
    space = {"n_neurons": {"int": [4, 16]}, "activation": {"categorical": ["relu", "tanh", "relux"]}}
    write_study(tmp_path, tiny_study(model={"factory": "my_models:build_model"}, search__space=space))
    env_path = {"PYTHONPATH": str(tmp_path)}
    result = run_cli(tmp_path, "check", "study.yaml", extra_env=env_path)
    message = " ".join(result.stderr.split())
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr, result.stderr
    # (TensorFlow may log a CUDA probe line to stderr first: the message is hpsearch's paragraph)
    assert ("error: search.space.activation: my_models:build_model cannot build and train a model with "
            "activation='relux'") in message, message
    fixed = run_cli(tmp_path, "check", "study.yaml", "--set", "search.space.activation.categorical=[relu, tanh]",
                    extra_env=env_path)
    assert fixed.returncode == 0, fixed.stderr
    assert "built and trained 3 model(s) on a few rows, one per categorical value" in " ".join(fixed.stdout.split())


def test_a_postgresql_storage_without_its_driver_says_which_extra_to_install(tmp_path):
    """The default install has no PostgreSQL driver: modules that fail to import stand in for the absent ones."""
    shims = tmp_path / "no-drivers"
    shims.mkdir()
    for module in ("psycopg", "psycopg2"):
        (shims / f"{module}.py").write_text(f'raise ImportError("No module named {module}")\n', encoding="utf-8")
    write_study(tmp_path, tiny_study(search__strategy="optuna", search__storage="postgresql://hp:pw@127.0.0.1/optuna"))
    result = run_cli(tmp_path, "run", "study.yaml", extra_env={"PYTHONPATH": str(shims)})
    message = " ".join(result.stderr.split())
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr, result.stderr
    assert message == ('error: search.storage: postgresql://hp:***@127.0.0.1/optuna is a PostgreSQL database, and '
                       'its driver (psycopg or psycopg2) is not installed: pip install "hpsearch[postgres]"'), message
    assert sorted(os.listdir(tmp_path)) == ["no-drivers", "study.yaml"]  # nothing written


def test_an_internal_error_is_one_paragraph_and_its_traceback_goes_to_a_log_file(tmp_path, monkeypatch):
    """A bug of hpsearch's (here: a command that raises what no user input explains) never shows a traceback;
    ``--debug`` shows it."""
    import importlib

    cli_main = importlib.import_module("hpsearch.cli.main")

    def broken(args):
        raise RuntimeError("a bug: list index out of range somewhere")

    monkeypatch.setitem(cli_main.COMMANDS, "check", broken)
    monkeypatch.setenv("HPSEARCH_LOG_DIR", str(tmp_path / "logs"))
    write_study(tmp_path, tiny_study())
    result = run_in_process(tmp_path, "check", "study.yaml")
    message = " ".join(result.stderr.split())
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert message.startswith("internal error in hpsearch: RuntimeError: a bug: list index out of range somewhere; "
                              f"the details are in {tmp_path / 'logs'}"), message
    assert message.endswith("please report it")
    (log,) = (tmp_path / "logs").iterdir()
    text = log.read_text(encoding="utf-8")
    assert text.startswith("hpsearch check study.yaml\n") and "Traceback (most recent call last)" in text
    assert "keras" in text.splitlines()[2] and "in broken" in text
    with pytest.raises(RuntimeError, match="a bug"):
        run_in_process(tmp_path, "check", "study.yaml", "--debug")
