"""Guided presets from the chapter, merged into a study file before validation (the user's values win)."""

from __future__ import annotations

from typing import Any

# ``search.space: chapter10``: the chapter's ranges. Hidden layers 1-3 to start (up to 5 later),
# 10-100 neurons with the same width in every layer, LR log-uniform, a few batch sizes.
CHAPTER10_SPACE: dict[str, Any] = {
    "n_hidden": {"int": [1, 3]},
    "n_neurons": {"int": [10, 100]},
    "learning_rate": {"float": [3.0e-4, 3.0e-2], "log": True},
    "batch_size": [16, 32, 64, 128],
}

# ``preset: stretch_pants``: a deliberately big network that early stopping keeps from overfitting;
# search mostly the learning rate and the regularisation.
STRETCH_PANTS: dict[str, Any] = {
    "model": {"params": {"n_hidden": 4, "n_neurons": 256}},
    "training": {"early_stopping": {"patience": 10, "restore_best_weights": True}},
    "search": {"space": {"learning_rate": {"float": [1.0e-4, 1.0e-2], "log": True},
                         "dropout": [0.0, 0.2, 0.4],
                         "l2": [0.0, 1.0e-5, 1.0e-4, 1.0e-3]}},
}
PRESETS = {"stretch_pants": STRETCH_PANTS}
SPACES = {"chapter10": CHAPTER10_SPACE}


def merge(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge two mappings; ``overrides`` wins."""
    merged = dict(defaults)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
