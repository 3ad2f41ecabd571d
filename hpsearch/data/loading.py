"""Load a dataset (builtin or file), validate it and split it the chapter's way.

The split follows "Hands-On Machine Learning" ch. 10: ``train_test_split`` into train_full/test, then
``train_test_split`` of train_full into train/valid, both with ``random_state=seed`` (stratified for
binary/multiclass). Scaling is not done here: it belongs in the model pipeline, fitted on train."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from hpsearch.config.schema import DataConfig, Task
from hpsearch.data.builtin import BUILTIN_DATASETS, RawData, resolved_path
from hpsearch.errors import DataError, did_you_mean

MIN_ROWS = 10
MAX_CLASSES = 20


@dataclass(frozen=True)
class Dataset:
    """Split arrays: float32 features; float32 regression targets, labels or a 0/1 matrix otherwise."""

    name: str
    task: Task
    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray | None
    y_valid: np.ndarray | None
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]

    def fingerprint(self) -> dict:
        """Sizes, task and a sha256 over every array (dtype, shape and bytes): equal data, equal digest."""
        digest = hashlib.sha256()
        for field in ("X_train", "y_train", "X_valid", "y_valid", "X_test", "y_test"):
            array = getattr(self, field)
            digest.update(f"{field}:{None if array is None else (array.dtype.str, array.shape)}".encode())
            if array is not None:
                digest.update(np.ascontiguousarray(array).tobytes())
        return {"n_train": len(self.X_train), "n_valid": 0 if self.X_valid is None else len(self.X_valid),
                "n_test": len(self.X_test), "n_features": list(self.X_train.shape[1:]), "task": self.task,
                "sha256": digest.hexdigest()}


def _is_numeric(y: np.ndarray) -> bool:
    return np.issubdtype(y.dtype, np.number)


def _integer_valued(y: np.ndarray) -> bool:
    return _is_numeric(y) and bool(np.all(np.mod(y, 1) == 0))


def infer_task(y: np.ndarray) -> Task:
    """Guess the task from target values.

    - several columns: multilabel if every value is 0 or 1, else regression (numeric only);
    - strings, objects, bools: binary with at most 2 distinct values, else multiclass;
    - numbers with a non-integer value: regression;
    - integer-valued numbers with k distinct values: binary if k <= 2; multiclass if k <= 20 and the
      classes average at least 5 rows each (k <= n_rows / 5); else regression (counts and scores,
      e.g. scikit-learn's diabetes target: 214 integer values).
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        if not _is_numeric(y):
            raise DataError(f"the target has {y.shape[1]} columns and not all are numeric: several target "
                            "columns must be numbers (regression) or 0/1 indicators (multilabel).")
        return "multilabel" if bool(np.isin(y, (0, 1)).all()) else "regression"
    n_unique = len(np.unique(y))
    if not _is_numeric(y):
        return "binary" if n_unique <= 2 else "multiclass"
    if not _integer_valued(y):
        return "regression"
    if n_unique <= 2:
        return "binary"
    return "multiclass" if n_unique <= MAX_CLASSES and 5 * n_unique <= len(y) else "regression"


def load_dataset(cfg: DataConfig, seed: int) -> Dataset:
    """Load the data ``cfg`` describes, subsample it (``max_rows``), validate it and split it.

    A fixed test set (fashion_mnist's, an .npz file's ``X_test``/``y_test``) replaces the first split, so
    ``test_size`` is ignored for it and ``max_rows`` only caps the rows left to split into train/valid.
    """
    raw = _load_raw(cfg)
    where = f"in {raw.source}"
    X, y = _checked(raw.X, raw.y, raw, where)
    if cfg.max_rows is not None and cfg.max_rows < len(X):
        keep = np.sort(np.random.default_rng(seed).choice(len(X), cfg.max_rows, replace=False))
        X, y = X[keep], y[keep]
    if len(X) < MIN_ROWS:
        raise DataError(f"{raw.source} has only {len(X)} rows; hpsearch needs at least {MIN_ROWS} to split "
                        "into train, validation and test sets. Add rows (or raise data.max_rows).")
    task = _check_task(y, cfg.task, raw, where)
    y = _finish_target(y, task)
    stratify = task in ("binary", "multiclass")
    if raw.test is None:
        X_full, X_test, y_full, y_test = _split(X, y, cfg.test_size, seed, stratify, raw, "data.test_size")
    else:
        X_test, y_test = _checked(*raw.test, raw, f"in the test set of {raw.source}")
        if X_test.shape[1:] != X.shape[1:]:
            raise DataError(f"the test set of {raw.source} has features of shape {X_test.shape[1:]}, the training "
                            f"rows {X.shape[1:]}: both must have the same columns.")
        X_full, y_full, y_test = X, y, _finish_target(y_test, task)
    if cfg.valid_size:
        X_train, X_valid, y_train, y_valid = _split(X_full, y_full, cfg.valid_size, seed, stratify, raw,
                                                    "data.valid_size")
    else:
        X_train, y_train, X_valid, y_valid = X_full, y_full, None, None
    f32 = partial(np.ascontiguousarray, dtype=np.float32)
    return Dataset(name=cfg.dataset or Path(cfg.path).stem, task=task,
                   X_train=f32(X_train), y_train=y_train, X_valid=None if X_valid is None else f32(X_valid),
                   y_valid=y_valid, X_test=f32(X_test), y_test=y_test,
                   feature_names=raw.feature_names, target_names=raw.target_names)


def _checked(X: np.ndarray, y: np.ndarray, raw: RawData, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Shapes agree, features are numeric, no NaN/inf anywhere; (n, 1) targets become (n,)."""
    X, y = np.asarray(X), np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if X.ndim < 2 or y.ndim not in (1, 2) or len(X) != len(y):
        raise DataError(f"features {where} have shape {X.shape} and the target {y.shape}: expected X of shape "
                        "(n_rows, n_features...) and y of shape (n_rows,) or (n_rows, n_targets).")
    if not (_is_numeric(X) or X.dtype == bool):
        raise DataError(f"features {where} have dtype {X.dtype}; hpsearch needs numeric features.")
    for array, names, what in ((X, raw.feature_names, "feature"), (y, raw.target_names, "target")):
        if not _is_numeric(array):
            continue
        bad = (~np.isfinite(array)).reshape(len(array), -1).sum(axis=0)
        if not bad.any():
            continue
        if len(names) == len(bad):
            counts = ", ".join(f"'{name}': {n} rows" for name, n in zip(names, bad) if n)
        else:
            counts = f"{bad.sum()} values"
        raise DataError(f"{what} values {where} include NaN or infinity ({counts}). Drop or impute those rows "
                        "before running hpsearch.")
    return X, y


def _check_task(y: np.ndarray, task: Task | None, raw: RawData, where: str) -> Task:
    """Refuse constant targets and single classes, infer the task if not given, check a given one fits."""
    if y.ndim == 1 and len(np.unique(y)) < 2:
        what = "has a single class" if task in ("binary", "multiclass") or not _is_numeric(y) else "is constant"
        raise DataError(f"target {', '.join(raw.target_names)} {where} {what} ({y[0].item()!r} in all {len(y)} rows), "
                        "so there is nothing to learn. Check data.target names the right column.")
    inferred = infer_task(y)
    if task is None or task == inferred:
        return inferred
    problem = None
    if task == "multilabel":
        problem = "multilabel needs several target columns holding only 0 and 1"
    elif task == "regression" and not _is_numeric(y):
        problem = "a regression target must be numeric"
    elif task in ("binary", "multiclass") and y.ndim == 2:
        problem = f"{task} needs a single column of class labels, the target has {y.shape[1]} columns"
    elif task == "binary" and len(np.unique(y)) != 2:
        problem = f"binary needs exactly 2 classes, the target has {len(np.unique(y))}"
    elif task == "multiclass" and _is_numeric(y) and not _integer_valued(y):
        problem = "multiclass needs class labels, the target has non-integer values"
    if problem:
        raise DataError(f"data.task is '{task}' but the target {', '.join(raw.target_names)} {where} does not "
                        f"fit: {problem}. Fix data.task, or remove it to let hpsearch infer '{inferred}'.")
    return task


def _finish_target(y: np.ndarray, task: Task) -> np.ndarray:
    if task == "regression":
        return y.astype(np.float32)
    if task == "multilabel" or _integer_valued(y):
        return y.astype(np.int64)
    return y


def _split(X: np.ndarray, y: np.ndarray, size: float, seed: int, stratify: bool, raw: RawData, field: str) -> list:
    try:
        return train_test_split(X, y, test_size=size, random_state=seed, stratify=y if stratify else None)
    except ValueError as exc:
        detail = ""
        if stratify:
            labels, counts = np.unique(y, return_counts=True)
            detail = f" (class {labels[counts.argmin()].item()!r} has {counts.min()} of {len(y)} rows)"
        raise DataError(f"cannot split {raw.source} with {field}={size}{detail}: {str(exc).rstrip('.')}. Add rows, "
                        f"drop or merge rare classes, or change {field}.") from exc


def _load_raw(cfg: DataConfig) -> RawData:
    if cfg.dataset is None:
        return _load_file(Path(cfg.path), cfg)
    loader = BUILTIN_DATASETS.get(cfg.dataset)
    if loader is None:
        raise DataError(f"data.dataset: unknown builtin dataset '{cfg.dataset}'"
                        f"{did_you_mean(cfg.dataset, BUILTIN_DATASETS)}. Builtin datasets: "
                        f"{', '.join(BUILTIN_DATASETS)}; or set data.path to a .csv, .parquet or .npz file.")
    return loader(cfg)


def _load_file(path: Path, cfg: DataConfig) -> RawData:
    path = resolved_path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist. Check data.path (relative paths are resolved "
                        f"from the current directory, {Path.cwd()}).")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".npz"):
        raise DataError(f"data file {path} has extension '{suffix}'; hpsearch reads .csv, .parquet and .npz.")
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty.")
    try:
        if suffix == ".npz":
            return _from_npz(path, cfg)
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read data file {path} as {suffix[1:]}: {exc}") from exc
    return _from_frame(frame, cfg, str(path))


def _require_columns(wanted: list[str], columns: list[str], source: str, field: str) -> None:
    for name in wanted:
        if name not in columns:
            raise DataError(f"{field}: column '{name}' not found in {source}{did_you_mean(name, columns, n=3)}. "
                            f"Columns: {', '.join(columns)}.")


def _from_frame(frame: pd.DataFrame, cfg: DataConfig, source: str) -> RawData:
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if frame.empty:
        raise DataError(f"{source} has no data rows (columns: {', '.join(columns) or 'none'}).")
    targets = [cfg.target] if isinstance(cfg.target, str) else list(cfg.target or columns[-1:])
    _require_columns(targets, columns, source, "data.target")
    _require_columns(list(cfg.features or []), columns, source, "data.features")
    features = [c for c in cfg.features or columns if c not in targets]
    if not features:
        raise DataError(f"{source} has no feature columns besides the target {', '.join(targets)}.")
    text = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        raise DataError(f"feature columns {', '.join(text)} in {source} are not numeric. hpsearch's command line "
                        "needs numeric features: encode them (e.g. pandas.get_dummies), leave them out with "
                        "data.features, or use the Python API with a scikit-learn pipeline for categorical data.")
    missing = frame[targets].isna().sum()
    if missing.any():
        counts = ", ".join(f"'{name}': {n}" for name, n in missing.items() if n)
        raise DataError(f"target values in {source} are missing ({counts} rows). Drop those rows first.")
    target = frame[targets]
    if all(pd.api.types.is_numeric_dtype(target[c]) for c in targets):
        y = target.to_numpy(dtype=np.float64, na_value=np.nan)
    elif len(targets) == 1:
        y = target[targets[0]].astype(str).to_numpy(dtype=str)
    else:
        raise DataError(f"target columns {', '.join(targets)} in {source} must all be numeric when there are several.")
    X = frame[features].to_numpy(dtype=np.float64, na_value=np.nan)
    return RawData(X, y, tuple(features), tuple(targets), source)


def _from_npz(path: Path, cfg: DataConfig) -> RawData:
    if cfg.target is not None or cfg.features is not None:
        raise DataError(f"data.target and data.features apply to csv/parquet files; {path} gives X and y directly.")
    with np.load(path, allow_pickle=False) as npz:
        keys = set(npz.files)
        x_key, y_key, x_test, y_test = (_spelled(keys, name) for name in ("X", "y", "X_test", "y_test"))
        if x_key is None or y_key is None or (x_test is None) != (y_test is None):
            raise DataError(f"{path} holds arrays {sorted(keys)}; hpsearch needs 'X' and 'y', and optionally both "
                            "'X_test' and 'y_test' (each name in either case, e.g. 'x', 'y', 'x_test', 'y_test').")
        X, y = npz[x_key], npz[y_key]
        test = (npz[x_test], npz[y_test]) if x_test is not None and y_test is not None else None
    names = tuple(f"x{i}" for i in range(X.shape[1])) if X.ndim == 2 else (x_key,)
    targets = tuple(f"y{i}" for i in range(y.shape[1])) if y.ndim == 2 and y.shape[1] > 1 else ("y",)
    return RawData(X, y, names, targets, str(path), test)


def _spelled(keys: set[str], name: str) -> str | None:
    """The key among an .npz file's arrays that spells ``name`` (``X`` or ``x``, ``y_test`` or ``Y_test``)."""
    first, rest = name[0], name[1:]
    return next((k for k in (first.upper() + rest, first.lower() + rest) if k in keys), None)
