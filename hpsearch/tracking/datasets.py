"""A study's data as MLflow datasets (the runs table's Dataset column): every split on the study run, and on each
trial run the splits that trial trained and was scored on (``DataSplits.trial_roles``: ``training``, and
``validation`` under holdout)."""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Callable
from typing import Any

import mlflow.data
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from hpsearch.errors import TrackingUnavailable, mask_credentials
from hpsearch.results import DataSplits
from hpsearch.tracking._retry import Retry, short_error

_log = logging.getLogger(__name__)

_DIGEST_CHARACTERS = 32  # MLflow keeps at most 36


def split_digest(X: Any, y: Any) -> str:
    """The sha256 of a split's arrays (dtype, shape and bytes, as the study's ``data.sha256`` param is made)."""
    digest = hashlib.sha256()
    for array in (np.asarray(X), np.asarray(y)):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:_DIGEST_CHARACTERS]


def _frame(X: Any, y: Any, data: DataSplits) -> tuple[pd.DataFrame, str]:
    """The split as one table (features, then the target) and the target's column name."""
    if isinstance(X, pd.DataFrame):
        features = X.rename(columns=str)  # a new frame: the caller's keeps its own column labels
    else:
        features = pd.DataFrame(np.asarray(X).reshape(len(X), -1))
        features.columns = list(data.feature_names) if len(data.feature_names) == features.shape[1] else [
            str(c) for c in features.columns]
    target = np.asarray(y)
    names = list(data.target_names) if target.ndim == 2 and len(data.target_names) == target.shape[1] else []
    if target.ndim == 2:
        names = names or [f"target_{k}" for k in range(target.shape[1])]
        return pd.concat([features, pd.DataFrame(target, columns=names, index=features.index)], axis=1), names[0]
    name = data.target_names[0] if len(data.target_names) == 1 else "target"
    return features.assign(**{name: target}), name


def dataset_inputs(data: DataSplits) -> dict[str, DatasetInput]:
    """One MLflow dataset input per split, by role; its digest is :func:`split_digest`, its context the role."""
    inputs = {}
    with warnings.catch_warnings():  # MLflow's hints on integer columns and on how it reads a source string
        warnings.simplefilter("ignore")
        for context, (X, y) in data.splits.items():
            frame, target = _frame(X, y, data)
            dataset = mlflow.data.from_pandas(frame, source=data.source, targets=target,
                                              name=f"{data.name}-{context}", digest=split_digest(X, y))
            inputs[context] = DatasetInput(dataset._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)])
    return inputs


class RunDatasets:
    """Logs a study's datasets on its study run and on each trial run; a store that takes none (an older server)
    gets a warning, once, and the study goes on without them."""

    def __init__(self, client: Callable[[], MlflowClient], retry: Retry) -> None:
        self._client, self._retry = client, retry
        self._trial_inputs: list[DatasetInput] = []

    def log_study(self, run_id: str, data: DataSplits) -> None:
        try:
            inputs = dataset_inputs(data)
        except Exception as exc:  # noqa: BLE001  (data MLflow cannot describe, say sparse or text: not the study's fault)
            _log.warning("hpsearch: the study's data is not recorded as MLflow datasets (%s: %s)",
                         type(exc).__name__, short_error(exc))
            return
        self._trial_inputs = [inputs[role] for role in data.trial_roles if role in inputs]
        self._log(run_id, list(inputs.values()))

    def log_trial(self, run_id: str) -> None:
        self._log(run_id, self._trial_inputs)

    def _log(self, run_id: str, inputs: list[DatasetInput]) -> None:
        if not inputs:
            return
        client = self._client()
        try:
            self._retry("the datasets", lambda: client.log_inputs(run_id, datasets=inputs))
        except (MlflowException, TrackingUnavailable) as exc:
            self._trial_inputs = []
            _log.warning("hpsearch: MLflow at %s did not take the study's datasets (%s); the study goes on without "
                         "them", mask_credentials(client.tracking_uri), short_error(exc))
