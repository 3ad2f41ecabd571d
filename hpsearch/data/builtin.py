"""The builtin datasets: scikit-learn's bundled sets, California housing (the StatLib file on disk, else
scikit-learn's download when the host answers) and Fashion MNIST (Keras' cache)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from hpsearch.config.schema import DataConfig
from hpsearch.errors import DataError

CAL_HOUSING_COLUMNS = ("longitude", "latitude", "housing_median_age", "total_rooms", "total_bedrooms",
                       "population", "households", "median_income", "median_house_value")
FASHION_FILES = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")


@dataclass
class RawData:
    """What a loader returns: unsplit arrays, their names, where they came from, an optional fixed test set."""

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    source: str
    test: tuple[np.ndarray, np.ndarray] | None = None


def resolved_path(path: Path | str, field: str = "data.path") -> Path:
    """The absolute path, refusing names no file can have (a NUL byte, too long, ...)."""
    try:
        resolved = Path(path).expanduser().resolve()
        resolved.is_file()  # raises for names the OS refuses
    except (OSError, ValueError) as exc:
        raise DataError(f"{field}: {str(path)[:200]!r} cannot be a file name ({exc}).") from None
    return resolved


def _sklearn_bundled(name: str, cfg: DataConfig) -> RawData:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    return RawData(bunch.data, bunch.target, tuple(map(str, bunch.feature_names)), ("target",), name)


def _online(host: str, timeout: float = 3.0) -> bool:
    """Whether ``host:443`` answers within ``timeout`` (DNS included); False at once if HPSEARCH_OFFLINE=1."""
    if os.environ.get("HPSEARCH_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    answered: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            answered.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # a thread, because DNS ignores the socket timeout
    thread.start()
    thread.join(timeout)
    return bool(answered)


def _california_housing(cfg: DataConfig) -> RawData:
    from sklearn.datasets import fetch_california_housing, get_data_home

    data_dir = os.environ.get("HPSEARCH_DATA_DIR")
    candidates = [cfg.path, data_dir and Path(data_dir) / "cal_housing.csv", Path("data/cal_housing.csv")]
    tried = [resolved_path(p, "data.path" if p == cfg.path else "$HPSEARCH_DATA_DIR") for p in candidates if p]
    for path in tried:
        if path.is_file():
            return _from_cal_housing_csv(path)
    tried.append(f"{Path(get_data_home()) / 'cal_housing_py3.pkz'} (scikit-learn's cache)")
    try:
        bunch = fetch_california_housing(download_if_missing=False)
    except OSError:
        bunch = _download_california_housing(tried)
    return RawData(bunch.data, bunch.target, tuple(bunch.feature_names), ("MedHouseVal",), "california_housing")


def _download_california_housing(tried: list[Path | str]) -> Bunch:
    """scikit-learn's downloader, tried only when the host answers; else a DataError listing ``tried``."""
    from sklearn.datasets import fetch_california_housing

    reason = "no network"
    if _online("ndownloader.figshare.com"):
        try:
            return fetch_california_housing()
        except Exception as exc:  # urllib, HTTP and archive errors all mean the same here
            reason = f"the download failed: {exc}"
    raise DataError(f"california_housing was not found ({', '.join(map(str, tried))}) and could not be "
                    f"downloaded ({reason}). Place the raw StatLib cal_housing.csv, with header "
                    f"{','.join(CAL_HOUSING_COLUMNS)}, at one of those paths (or point data.path or "
                    "$HPSEARCH_DATA_DIR at it).")


def _from_cal_housing_csv(path: Path) -> RawData:
    """Derive scikit-learn's 8 features (same names and order) and target from the raw StatLib file."""
    raw = pd.read_csv(path)
    missing = [c for c in CAL_HOUSING_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(f"{path} is not the raw StatLib cal_housing.csv: columns {', '.join(missing)} are missing; "
                        f"the header must be {','.join(CAL_HOUSING_COLUMNS)}.")
    households = raw["households"]
    features = pd.DataFrame({
        "MedInc": raw["median_income"], "HouseAge": raw["housing_median_age"],
        "AveRooms": raw["total_rooms"] / households, "AveBedrms": raw["total_bedrooms"] / households,
        "Population": raw["population"], "AveOccup": raw["population"] / households,
        "Latitude": raw["latitude"], "Longitude": raw["longitude"],
    })
    y = (raw["median_house_value"] / 100_000).to_numpy(dtype=np.float64)
    return RawData(features.to_numpy(dtype=np.float64), y, tuple(features.columns), ("MedHouseVal",), str(path))


def _keras_datasets_dir() -> Path:
    """Keras's download cache as Keras computes it: $KERAS_HOME, else ~/.keras (/tmp/.keras if ~ is read-only)."""
    if os.environ.get("KERAS_HOME"):
        return Path(os.environ["KERAS_HOME"]) / "datasets"
    base = Path.home() if os.access(Path.home(), os.W_OK) else Path("/tmp")
    return base / ".keras" / "datasets"


def _fashion_mnist(cfg: DataConfig) -> RawData:
    folder = _keras_datasets_dir() / "fashion-mnist"
    if not all((folder / name).is_file() for name in FASHION_FILES) and not _online("storage.googleapis.com"):
        raise DataError(f"fashion_mnist is not in the Keras cache {folder} and there is no network to download "
                        f"it. Place {', '.join(FASHION_FILES)} in that folder (or set $KERAS_HOME).")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    try:
        (X, y), (X_test, y_test) = keras.datasets.fashion_mnist.load_data()
    except Exception as exc:  # keras raises bare Exceptions for failed downloads, ValueError for bad files
        raise DataError(f"cannot load fashion_mnist from {folder}: {exc}. Delete that folder's files to "
                        "download them again, or place the four original files there.") from exc
    scale = np.float32(255)
    return RawData(X / scale, y.astype(np.int64), ("pixels",), ("label",), "fashion_mnist",
                test=(X_test / scale, y_test.astype(np.int64)))


BUILTIN_DATASETS: dict[str, Callable[[DataConfig], RawData]] = {
    **{name: partial(_sklearn_bundled, name) for name in ("iris", "wine", "breast_cancer", "digits", "diabetes")},
    "california_housing": _california_housing,
    "fashion_mnist": _fashion_mnist,
}
