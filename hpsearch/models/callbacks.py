"""Keras callbacks for one fit: early stopping, NaN guard, and a hook that feeds curves and pruning."""

from __future__ import annotations

from collections.abc import Callable

from hpsearch.config.schema import TrainingConfig
from hpsearch.models.backend import keras

# Called after every epoch with (epoch, logs); returns True to stop training (pruned).
EpochHook = Callable[[int, dict[str, float]], bool]


class _EpochHook(keras.callbacks.Callback):
    """Exception-safe bridge from Keras to hpsearch: a failing hook never kills the fit silently."""

    def __init__(self, hook: EpochHook) -> None:
        super().__init__()
        self._hook = hook

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = {k: float(v) for k, v in (logs or {}).items()}
        if self._hook(epoch, values):
            self.model.stop_training = True


def nan_guard(hook: EpochHook) -> list[keras.callbacks.Callback]:
    """The callbacks every fit gets: the epoch hook and TerminateOnNaN."""
    return [_EpochHook(hook), keras.callbacks.TerminateOnNaN()]


def fit_callbacks(training: TrainingConfig, hook: EpochHook, has_validation: bool) -> list[keras.callbacks.Callback]:
    """The callbacks of one study fit: :func:`nan_guard`, and EarlyStopping when configured."""
    callbacks = nan_guard(hook)
    stopping = training.early_stopping
    if stopping is not None:
        monitor = stopping.monitor if has_validation else stopping.monitor.removeprefix("val_")
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, patience=stopping.patience, min_delta=stopping.min_delta,
            restore_best_weights=stopping.restore_best_weights))
    return callbacks
