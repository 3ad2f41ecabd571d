"""The Keras side of the learning-rate range test: grow the LR exponentially batch by batch, record the loss."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from hpsearch.models.backend import keras


class ExponentialLR(keras.callbacks.Callback):
    """Sets the LR of batch ``i`` to ``start * factor**i``; records each batch's own loss; stops when
    ``exploded(losses)`` says so, or after ``iterations`` batches.

    Keras 3 reports the running mean of the epoch so far; each batch's own loss is recovered from it.
    """

    def __init__(self, start: float, end: float, iterations: int, exploded: Callable[[list[float]], bool]) -> None:
        super().__init__()
        self.start, self.iterations, self.exploded = start, iterations, exploded
        self.factor = (end / start) ** (1 / max(iterations - 1, 1))
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self._batch_in_epoch, self._previous_mean = 0, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._batch_in_epoch, self._previous_mean = 0, 0.0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.model.optimizer.learning_rate.assign(self.start * self.factor ** len(self.lrs))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        mean = float((logs or {}).get("loss", math.nan))
        self._batch_in_epoch += 1
        n = self._batch_in_epoch
        loss = mean * n - self._previous_mean * (n - 1)
        self._previous_mean = mean
        self.lrs.append(float(self.model.optimizer.learning_rate.numpy()))
        self.losses.append(loss)
        if len(self.lrs) >= self.iterations or self.exploded(self.losses):
            self.model.stop_training = True


def record_range(estimator: Any, X: Any, y: Any, start: float, end: float, iterations: int,
                 exploded: Callable[[list[float]], bool]) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``estimator`` (a scikeras wrapper) under the exponential schedule; (lrs, per-batch losses)."""
    steps_per_epoch = math.ceil(len(y) / estimator.batch_size)
    batch_by_batch = {"steps_per_execution": 1} if "steps_per_execution" in estimator.get_params() else {}
    estimator.set_params(epochs=math.ceil(iterations / steps_per_epoch), **batch_by_batch)
    schedule = ExponentialLR(start, end, iterations, exploded)
    estimator.fit(X, y, callbacks=[schedule, keras.callbacks.TerminateOnNaN()])
    return np.array(schedule.lrs), np.array(schedule.losses)
