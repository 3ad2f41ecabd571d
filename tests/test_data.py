"""Tests for hpsearch.data: builtin sets, files, validation errors, the chapter's split; never the network."""

from __future__ import annotations

import gzip
import json
import math
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes, load_iris

from hpsearch.data.builtin import BUILTIN_DATASETS, FASHION_FILES
from hpsearch.data.loading import Dataset, infer_task, load_dataset
from hpsearch.errors import DataError

REPO = Path(__file__).resolve().parents[1]
CAL_HOUSING = Path(__file__).resolve().parents[2] / "shared" / "data" / "cal_housing.csv"
CAL_FEATURES = ("MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup", "Latitude", "Longitude")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test runs offline: the flag is set and outgoing connections fail at once."""
    monkeypatch.setenv("HPSEARCH_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise OSError("network blocked in tests")

    monkeypatch.setattr(socket, "create_connection", refuse)


def cfg(**fields) -> SimpleNamespace:
    """A duck-typed DataConfig with the study file's defaults."""
    defaults = dict(dataset=None, path=None, target=None, features=None, task=None,
                    test_size=0.25, valid_size=0.25, max_rows=None)
    return SimpleNamespace(**{**defaults, **fields})


def split_sizes(n: int, test_size: float = 0.25, valid_size: float = 0.25) -> tuple[int, int, int]:
    """(train, valid, test) as two train_test_split calls produce them."""
    n_test = math.ceil(n * test_size)
    n_valid = math.ceil((n - n_test) * valid_size)
    return n - n_test - n_valid, n_valid, n_test


def write_csv(path: Path, n: int = 40, **columns) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), **columns})
    frame.to_csv(path, index=False)
    return path


# --- builtin datasets -------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "task", "n_rows", "n_features"), [
    ("iris", "multiclass", 150, 4), ("wine", "multiclass", 178, 13), ("breast_cancer", "binary", 569, 30),
    ("digits", "multiclass", 1797, 64), ("diabetes", "regression", 442, 10),
])
def test_bundled_sets_load_with_the_chapter_split(name, task, n_rows, n_features):
    data = load_dataset(cfg(dataset=name), seed=42)
    assert data.name == name and data.task == task
    assert (len(data.X_train), len(data.X_valid), len(data.X_test)) == split_sizes(n_rows)
    assert data.X_train.shape[1:] == (n_features,) and len(data.feature_names) == n_features
    for X in (data.X_train, data.X_valid, data.X_test):
        assert X.dtype == np.float32 and X.flags.c_contiguous
    assert data.y_train.dtype == (np.float32 if task == "regression" else np.int64)
    assert data.y_train.shape == (len(data.X_train),)


def test_classification_splits_are_stratified():
    data = load_dataset(cfg(dataset="iris"), seed=0)
    assert sorted(np.bincount(data.y_test)) == [12, 13, 13]
    assert sorted(np.bincount(data.y_valid)) == [9, 9, 10]


def test_no_validation_set_and_max_rows():
    data = load_dataset(cfg(dataset="digits", valid_size=0, max_rows=200), seed=1)
    assert data.X_valid is None and data.y_valid is None
    assert (len(data.X_train), len(data.X_test)) == (150, 50)
    assert data.fingerprint()["n_valid"] == 0


def test_fingerprint_is_stable_and_tracks_the_seed():
    first = load_dataset(cfg(dataset="wine"), seed=42).fingerprint()
    assert first == load_dataset(cfg(dataset="wine"), seed=42).fingerprint()
    assert first["sha256"] != load_dataset(cfg(dataset="wine"), seed=7).fingerprint()["sha256"]
    assert {k: first[k] for k in ("n_train", "n_valid", "n_test", "n_features", "task")} == {
        "n_train": 99, "n_valid": 34, "n_test": 45, "n_features": [13], "task": "multiclass"}
    assert len(first["sha256"]) == 64


def test_unknown_dataset_suggests_the_closest_name():
    with pytest.raises(DataError, match=r"\(did you mean 'fashion_mnist'\?\)") as err:
        load_dataset(cfg(dataset="fashion_mnst"), seed=0)
    assert all(name in str(err.value) for name in BUILTIN_DATASETS)


# --- infer_task --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("y", "task"), [
    (load_diabetes().target, "regression"),
    (load_iris().target, "multiclass"),
    (np.array(["cat", "dog"] * 20), "binary"),
    (np.array(["a", "b", "c"] * 20, dtype=object), "multiclass"),
    (np.array([True, False] * 20), "binary"),
    (np.array([0.0, 1.0] * 20), "binary"),
    (np.linspace(0, 1, 40), "regression"),
    (np.arange(60) % 30, "regression"),  # 30 integer values: a count, not classes
    (np.arange(12) % 4, "regression"),   # 4 values in 12 rows: too few rows per class
    (np.arange(40) % 4, "multiclass"),
    (np.array([[0, 1, 1], [1, 0, 0]] * 10), "multilabel"),
    (np.array([[0.5, 1.0], [2.0, 3.5]] * 10), "regression"),
    (np.array([[1], [0], [1]]), "binary"),
])
def test_infer_task(y, task):
    assert infer_task(y) == task


# --- files -------------------------------------------------------------------------------------------

def test_csv_round_trip_with_string_labels(tmp_path):
    path = write_csv(tmp_path / "pets.csv", n=60, species=["cat", "dog", "fish"] * 20)
    data = load_dataset(cfg(path=path), seed=3)
    assert (data.name, data.task) == ("pets", "multiclass")
    assert data.feature_names == ("a", "b") and data.target_names == ("species",)
    assert set(data.y_train) == {"cat", "dog", "fish"}
    assert (len(data.X_train), len(data.X_valid), len(data.X_test)) == split_sizes(60)
    expected = pd.read_csv(path)[["a", "b"]].to_numpy(np.float32)
    both = np.concatenate([data.X_train, data.X_valid, data.X_test])
    assert sorted(map(tuple, both)) == sorted(map(tuple, expected))


def test_csv_explicit_target_features_and_task(tmp_path):
    path = write_csv(tmp_path / "d.csv", label=[0, 1] * 20, c=np.arange(40.0))
    data = load_dataset(cfg(path=path, target="c", features=["b", "a"], task="regression"), seed=0)
    assert data.feature_names == ("b", "a") and data.target_names == ("c",)
    assert data.task == "regression" and data.y_train.dtype == np.float32


def test_parquet_multilabel_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=40), "t1": [0, 1] * 20, "t2": [1, 1, 0, 0] * 10})
    frame.to_parquet(tmp_path / "m.parquet")
    data = load_dataset(cfg(path=tmp_path / "m.parquet", target=["t1", "t2"]), seed=0)
    assert data.task == "multilabel" and data.target_names == ("t1", "t2")
    assert data.y_train.shape == (len(data.X_train), 2) and data.y_train.dtype == np.int64


def test_npz_with_its_own_test_set(tmp_path):
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "a.npz", x=rng.normal(size=(80, 3)), y=rng.normal(size=80),
             X_test=rng.normal(size=(15, 3)), y_test=rng.normal(size=15))
    data = load_dataset(cfg(path=tmp_path / "a.npz", test_size=0.5), seed=0)
    assert data.task == "regression" and data.feature_names == ("x0", "x1", "x2")
    assert (len(data.X_train), len(data.X_valid), len(data.X_test)) == (60, 20, 15)
    assert data.y_test.dtype == np.float32


def test_npz_regression_with_several_targets(tmp_path):
    np.savez(tmp_path / "b.npz", X=np.arange(60.0).reshape(20, 3), y=np.arange(40.0).reshape(20, 2) / 3)
    data = load_dataset(cfg(path=tmp_path / "b.npz", valid_size=0), seed=0)
    assert data.task == "regression" and data.y_train.shape == (15, 2) and data.target_names == ("y0", "y1")


# --- errors ------------------------------------------------------------------------------------------

def test_missing_file_names_the_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="does not exist") as err:
        load_dataset(cfg(path=Path("nope.csv")), seed=0)
    assert str(tmp_path / "nope.csv") in str(err.value)


def test_unknown_extension(tmp_path):
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"'\.xlsx'.*\.csv, \.parquet and \.npz"):
        load_dataset(cfg(path=tmp_path / "d.xlsx"), seed=0)


def test_empty_file_and_header_only(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv is empty"):
        load_dataset(cfg(path=tmp_path / "empty.csv"), seed=0)
    (tmp_path / "header.csv").write_text("a,b,y\n")
    with pytest.raises(DataError, match="header.csv has no data rows"):
        load_dataset(cfg(path=tmp_path / "header.csv"), seed=0)


def test_target_not_found_suggests_close_columns(tmp_path):
    path = write_csv(tmp_path / "d.csv", price=np.arange(40.0))
    with pytest.raises(DataError, match=r"data.target: column 'prices' not found in .*d\.csv \(did you mean 'price'"):
        load_dataset(cfg(path=path, target="prices"), seed=0)
    with pytest.raises(DataError, match="data.features: column 'z'"):
        load_dataset(cfg(path=path, features=["a", "z"]), seed=0)


def test_non_numeric_features_are_named(tmp_path):
    path = write_csv(tmp_path / "d.csv", city=["Paris", "Rome"] * 20, y=np.arange(40.0))
    with pytest.raises(DataError, match="feature columns city in .*d.csv are not numeric.*Python API"):
        load_dataset(cfg(path=path), seed=0)


def test_nan_and_inf_are_counted_per_column(tmp_path):
    path = write_csv(tmp_path / "d.csv", c=[np.nan, 1.0, np.nan, 2.0] * 10, y=np.arange(40.0))
    with pytest.raises(DataError, match=r"feature values in .*d.csv include NaN or infinity \('c': 20 rows\)"):
        load_dataset(cfg(path=path), seed=0)
    path = write_csv(tmp_path / "e.csv", y=[np.inf, 1.5, 2.5, 3.5] * 10)
    with pytest.raises(DataError, match=r"target values .*'y': 10 rows"):
        load_dataset(cfg(path=path), seed=0)
    path = write_csv(tmp_path / "f.csv", label=["x", None, "y", "z"] * 10)
    with pytest.raises(DataError, match=r"target values in .*f.csv are missing \('label': 10 rows\)"):
        load_dataset(cfg(path=path), seed=0)


def test_constant_target_and_single_class(tmp_path):
    with pytest.raises(DataError, match="target y in .*d.csv is constant"):
        load_dataset(cfg(path=write_csv(tmp_path / "d.csv", y=[2.5] * 40)), seed=0)
    with pytest.raises(DataError, match=r"target kind in .*e.csv has a single class \('spam' in all 40 rows\)"):
        load_dataset(cfg(path=write_csv(tmp_path / "e.csv", kind=["spam"] * 40)), seed=0)


def test_too_few_rows(tmp_path):
    path = write_csv(tmp_path / "d.csv", n=9, y=np.arange(9.0))
    with pytest.raises(DataError, match="d.csv has only 9 rows.*at least 10"):
        load_dataset(cfg(path=path), seed=0)


def test_explicit_task_must_fit_the_target(tmp_path):
    path = write_csv(tmp_path / "d.csv", y=np.arange(40) % 5)
    with pytest.raises(DataError, match="data.task is 'binary'.*exactly 2 classes, the target has 5"):
        load_dataset(cfg(path=path, task="binary"), seed=0)
    with pytest.raises(DataError, match="data.task is 'multilabel'"):
        load_dataset(cfg(path=path, task="multilabel"), seed=0)
    path = write_csv(tmp_path / "e.csv", y=["p", "q"] * 20)
    with pytest.raises(DataError, match="regression target must be numeric"):
        load_dataset(cfg(path=path, task="regression"), seed=0)


def test_class_too_rare_to_stratify(tmp_path):
    path = write_csv(tmp_path / "d.csv", y=["a", "b"] * 19 + ["a", "rare"])
    with pytest.raises(DataError, match=r"cannot split .*d.csv with data.test_size=0.25 \(class 'rare' has 1 of 40"):
        load_dataset(cfg(path=path), seed=0)


def test_npz_without_y(tmp_path):
    np.savez(tmp_path / "a.npz", X=np.zeros((20, 2)))
    with pytest.raises(DataError, match=r"a.npz holds arrays \['X'\]; hpsearch needs 'X' and 'y'.*either case"):
        load_dataset(cfg(path=tmp_path / "a.npz"), seed=0)


@pytest.mark.parametrize("names", [("X", "y", "X_test", "y_test"), ("x", "y", "x_test", "y_test"),
                                   ("x", "Y", "X_test", "Y_test")])
def test_npz_names_in_either_case(tmp_path, names):
    """MNIST-1D ships lower-case x, y, x_test, y_test: every spelling of the four arrays reads alike."""
    rng = np.random.default_rng(0)
    arrays = dict(zip(names, (rng.normal(size=(40, 3)), rng.normal(size=40), rng.normal(size=(9, 3)),
                              rng.normal(size=9)), strict=True))
    np.savez(tmp_path / "a.npz", **arrays)
    data = load_dataset(cfg(path=tmp_path / "a.npz"), seed=0)
    assert len(data.X_test) == 9 and len(data.X_train) + len(data.X_valid) == 40


def test_npz_with_half_a_test_set(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((20, 2)), y=np.ones(20), x_test=np.zeros((5, 2)))
    with pytest.raises(DataError, match="optionally both 'X_test' and 'y_test'"):
        load_dataset(cfg(path=tmp_path / "a.npz"), seed=0)


# --- california_housing ------------------------------------------------------------------------------

@pytest.mark.skipif(not CAL_HOUSING.is_file(), reason=f"the raw StatLib file is not at {CAL_HOUSING}")
@pytest.mark.parametrize("where", ["path", "env", "cwd"])
def test_california_housing_from_the_raw_file(where, tmp_path, monkeypatch):
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path / "sklearn"))
    if where == "env":
        monkeypatch.setenv("HPSEARCH_DATA_DIR", str(CAL_HOUSING.parent))
    elif where == "cwd":
        monkeypatch.chdir(CAL_HOUSING.parents[1])
    data = load_dataset(cfg(dataset="california_housing", path=CAL_HOUSING if where == "path" else None), seed=42)
    assert data.name == "california_housing" and data.task == "regression"
    assert data.feature_names == CAL_FEATURES and data.target_names == ("MedHouseVal",)
    assert (len(data.X_train), len(data.X_valid), len(data.X_test)) == (11610, 3870, 5160)
    X = np.concatenate([data.X_train, data.X_valid, data.X_test])
    y = np.concatenate([data.y_train, data.y_valid, data.y_test])
    (row,) = np.flatnonzero((X[:, 4] == 322) & np.isclose(X[:, 0], 8.3252))
    np.testing.assert_allclose(X[row], [8.3252, 41, 880 / 126, 129 / 126, 322, 322 / 126, 37.88, -122.23], rtol=1e-6)
    assert X[row, 2] == pytest.approx(6.984127, abs=1e-6) and y[row] == pytest.approx(4.526)


def test_california_housing_offline_without_a_file_names_the_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("HPSEARCH_OFFLINE")  # the network check itself must fail fast, not just be skipped
    for var in ("HOME", "SCIKIT_LEARN_DATA", "HPSEARCH_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="no network") as err:
        load_dataset(cfg(dataset="california_housing"), seed=0)
    message = str(err.value)
    for path in (tmp_path / "hpsearch_data_dir" / "cal_housing.csv", tmp_path / "data" / "cal_housing.csv",
                 tmp_path / "scikit_learn_data" / "cal_housing_py3.pkz"):
        assert str(path) in message
    assert "StatLib cal_housing.csv" in message and "longitude,latitude,housing_median_age" in message


def test_california_housing_rejects_a_file_with_the_wrong_header(tmp_path):
    write_csv(tmp_path / "cal.csv", y=np.arange(40.0))
    with pytest.raises(DataError, match="not the raw StatLib cal_housing.csv: columns longitude"):
        load_dataset(cfg(dataset="california_housing", path=tmp_path / "cal.csv"), seed=0)


# --- fashion_mnist -----------------------------------------------------------------------------------

def write_idx(folder: Path, prefix: str, labels: np.ndarray, images: np.ndarray) -> None:
    """Fashion-MNIST's gzipped idx files: big-endian magic 2049 (labels) / 2051 (images), then dims."""
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, len(images), 28, 28) + images.astype(np.uint8).tobytes())


def test_fashion_mnist_from_the_keras_cache(tmp_path):
    """Keras reads $KERAS_HOME when it is imported, so the load runs in a fresh interpreter."""
    folder = tmp_path / "keras" / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(folder, "train", np.arange(50) % 10, rng.integers(0, 256, size=(50, 28, 28)))
    write_idx(folder, "t10k", np.arange(12) % 10, np.full((12, 28, 28), 255))
    script = (
        "import json, numpy as np; from types import SimpleNamespace as NS\n"
        "from hpsearch.data.loading import load_dataset\n"
        "d = load_dataset(NS(dataset='fashion_mnist', path=None, target=None, features=None, task=None,"
        " test_size=0.5, valid_size=0.2, max_rows=None), seed=42)\n"
        "print(json.dumps({'task': d.task, 'shapes': [list(a.shape) for a in (d.X_train, d.X_valid, d.X_test)],"
        " 'dtype': str(d.X_train.dtype), 'max': float(d.X_train.max()), 'test_min': float(d.X_test.min()),"
        " 'y_test': d.y_test.tolist(), 'classes': sorted(set(d.y_train.tolist())), 'names': d.feature_names}))\n"
    )
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "HPSEARCH_OFFLINE": "1",
           "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["task"] == "multiclass" and result["dtype"] == "float32" and result["names"] == ["pixels"]
    assert result["shapes"] == [[40, 28, 28], [10, 28, 28], [12, 28, 28]]  # test_size ignored: Keras's test set
    assert 0.9 < result["max"] <= 1.0 and result["test_min"] == 1.0
    assert result["y_test"] == list(np.arange(12) % 10) and result["classes"] == list(range(10))


def test_fashion_mnist_offline_with_an_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(DataError, match="no network") as err:
        load_dataset(cfg(dataset="fashion_mnist"), seed=0)
    assert str(tmp_path / "keras" / "datasets" / "fashion-mnist") in str(err.value)
    assert all(name in str(err.value) for name in FASHION_FILES)


def test_dataset_is_frozen():
    data = load_dataset(cfg(dataset="iris", valid_size=0), seed=0)
    assert isinstance(data, Dataset)
    with pytest.raises(AttributeError):
        data.task = "binary"


def test_npz_test_set_must_have_the_same_features(tmp_path):
    np.savez(tmp_path / "a.npz", X=np.zeros((20, 3)), y=np.arange(20.0) / 7, X_test=np.zeros((5, 2)), y_test=np.ones(5))
    with pytest.raises(DataError, match=r"test set of .*a.npz has features of shape \(2,\), the training rows \(3,\)"):
        load_dataset(cfg(path=tmp_path / "a.npz"), seed=0)
