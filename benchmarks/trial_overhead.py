"""Benchmark 3, per-trial overhead: many short trials through hpsearch vs a bare Keras loop doing the same fits.

The fits: 1,000 rows of the chapter's data (scaled), 5 epochs, n_hidden 0-2, n_neurons 1-16, the chapter's
log-uniform LR, early stopping on the validation split, holdout scoring. hpsearch runs the study through
:func:`hpsearch.runner.run_study` as shipped (local MLflow: params, curves, a model per trial), and once more with
tracking off (NullTracker). The bare loop fits the same candidates (same order, same builder, same data) with
``clear_session`` between fits, the same ``steps_per_execution`` as hpsearch's (so the ratio is hpsearch's overhead,
not its faster epochs), and scores each on the validation split. Trials/minute count from the search start
to the last trial's end (hpsearch's refit and report excluded). Target: hpsearch >= 0.9x the bare loop.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Clock, Figure, as_study, check, main_for, run_untracked, scratch, tiny_raw

NAME = "trial_overhead"


def bare_keras_loop(plan: Any, candidates: list[dict[str, Any]]) -> float:
    """The same fits with nothing around them: build, fit with early stopping, score. Returns trials/minute."""
    from sklearn.preprocessing import StandardScaler

    from hpsearch.models.backend import keras
    from hpsearch.models.mlp import build_mlp

    data, training = plan.data, plan.study.training
    scaler = StandardScaler().fit(data.X_train)
    X, X_valid = scaler.transform(data.X_train).astype(np.float32), scaler.transform(data.X_valid).astype(np.float32)
    y, y_valid = data.y_train.astype(np.float32), data.y_valid.astype(np.float32)
    meta = {"X_shape_": X.shape, "target_type_": "continuous", "n_outputs_": 1}
    fixed = dict(plan.study.model.params)
    started = time.perf_counter()
    for number, params in enumerate(candidates):
        keras.backend.clear_session(free_memory=True)
        keras.utils.set_random_seed(42 + 7919 * number)
        model = build_mlp(meta, **fixed, **params)
        model.steps_per_execution = training.steps_per_execution
        patience = training.early_stopping.patience if training.early_stopping else None
        stop = [keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)] if patience else []
        model.fit(X, y, epochs=training.epochs, batch_size=training.batch_size, validation_data=(X_valid, y_valid),
                  callbacks=stop, verbose=0)
        float(np.mean((model.predict(X_valid, verbose=0).ravel() - y_valid) ** 2))
    return 60 * len(candidates) / (time.perf_counter() - started)


def run(quick: bool, data: Path) -> list[Figure]:
    from hpsearch.runner import plan_study, run_study

    n_trials = 8 if quick else 30
    with scratch(NAME) as workdir:
        study, text = as_study(tiny_raw(data, workdir, "bench-trials", [f"search.n_trials={n_trials}"]))
        plan = plan_study(study)
        candidates = list(plan.strategy.space.sample(n_trials, study.seed))
        bare_keras_loop(plan, candidates[:2])  # warm-up: TensorFlow's first-fit costs, paid by neither side
        bare = bare_keras_loop(plan, candidates)
        print(f"[{NAME}] bare Keras loop: {bare:.1f} trials/min", flush=True)
        tracked = Clock()
        run_study(study, text, tracked, plan=plan)
        print(f"[{NAME}] hpsearch (tracking on): {tracked.per_minute():.1f} trials/min", flush=True)
        untracked = Clock()
        study_off, text_off = as_study(tiny_raw(data, workdir, "bench-trials-off", [f"search.n_trials={n_trials}"]))
        run_untracked(study_off, text_off, untracked)
        print(f"[{NAME}] hpsearch (tracking off): {untracked.per_minute():.1f} trials/min", flush=True)
    ratio, ratio_off = tracked.per_minute() / bare, untracked.per_minute() / bare
    return [
        Figure(NAME, "bare Keras loop trials/min", bare, "/min", note=f"{n_trials} trials x 5 epochs, 1,000 rows"),
        Figure(NAME, "hpsearch trials/min (default: local MLflow, models)", tracked.per_minute(), "/min"),
        Figure(NAME, "hpsearch / bare loop (as shipped)", ratio, "x", ">= 0.9x", check(ratio, 0.9, False)),
        Figure(NAME, "hpsearch trials/min (tracking off)", untracked.per_minute(), "/min"),
        Figure(NAME, "hpsearch / bare loop (tracking off)", ratio_off, "x", ">= 0.9x", check(ratio_off, 0.9, False)),
    ]


if __name__ == "__main__":
    main_for(NAME, run, __doc__.splitlines()[0])
