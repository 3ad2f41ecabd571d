"""The contenders of the headline benchmark, each written as its users write it, one run per fresh process.

    python benchmarks/contenders.py CONTENDER --budget SECONDS --seed N --out row.json [--data cal_housing.csv]

Every contender gets the chapter's split (``train_test_split(random_state=42)`` twice, as hpsearch builds it), the
chapter's space (``n_hidden`` 0-3, ``n_neurons`` 1-99, ``learning_rate`` log-uniform 3e-4-3e-2), SGD, MSE, batch
32, at most 100 epochs, ``EarlyStopping(patience=10, restore_best_weights=True)`` (hpsearch's default; the same
for all), and is seeded with ``--seed`` (its sampler and ``keras.utils.set_random_seed``):

- ``hpsearch``: the whole ``hpsearch run studies/california_housing.yaml`` command with the defaults a study gets
  when it says nothing else (Optuna TPE + Hyperband pruning, holdout, backend auto, the delivered model
  ``search.final: auto``) and ``search.timeout: SECONDS``, tracked on the embedded store, with an empty JAX
  compilation cache (a user's first run; later runs on the same machine compile less).
- ``optuna``: Optuna TPE + ``HyperbandPruner`` wired by hand (a Keras callback reporting ``val_loss``, the best
  model kept by the objective), ``study.optimize(timeout=SECONDS)``.
- ``keras_tuner``: ``keras_tuner.Hyperband(max_epochs=100)``, stopped at the budget (no trial starts after it, the
  running one stops at it), its ``get_best_models(1)[0]`` delivered.
- ``chapter``: the chapter's ``RandomizedSearchCV`` over scikeras (``n_iter=10, cv=3``, 100 epochs), run to its
  own end (``--budget`` is ignored), its refit ``best_estimator_`` delivered.

The rivals train on Keras' default backend (TensorFlow) with Keras' defaults. Each contender hands over one model
(the best by validation, as its user would take it); that model is scored once on the test set. The timeline (the
model the contender would deliver after each trial, by validation, and its test MSE) is measured with the clock
paused and only draws the anytime curves: no choice is made from it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CHAPTER_STUDY, REPO, data_file, load_split

EPOCHS, PATIENCE, BATCH = 100, 10, 32
CONTENDERS = ("hpsearch", "optuna", "keras_tuner", "chapter")


class Clock:
    """Wall seconds since the contender started, minus the pauses taken to score timeline models."""

    def __init__(self) -> None:
        self.started, self.paused = time.perf_counter(), 0.0
        self.timeline: list[dict[str, float]] = []  # after each improving trial: t, valid MSE, test MSE

    def now(self) -> float:
        return time.perf_counter() - self.started - self.paused

    def improved(self, valid_mse: float, model: Any, X_test: np.ndarray, y_test: np.ndarray) -> None:
        pause = time.perf_counter()
        t = self.now()
        self.timeline.append({"t": t, "valid_mse": valid_mse, "test_mse": mse(model, X_test, y_test)})
        self.paused += time.perf_counter() - pause


def mse(model: Any, X: np.ndarray, y: np.ndarray) -> float:
    predicted = model.predict(X, verbose=0) if hasattr(model, "layers") else model.predict(X)
    return float(np.mean((np.ravel(predicted) - y) ** 2))


def chapter_build_model(n_hidden: int = 1, n_neurons: int = 30, learning_rate: float = 3e-3,
                        input_shape: list[int] = [8]) -> Any:  # noqa: B006  (the chapter's signature)
    """The chapter's build_model; ``int(n_neurons)`` is the one change Keras 3 needs (np.int64 is refused)."""
    import keras

    model = keras.models.Sequential()
    model.add(keras.layers.InputLayer(shape=input_shape))
    for _ in range(n_hidden):
        model.add(keras.layers.Dense(int(n_neurons), activation="relu"))
    model.add(keras.layers.Dense(1))
    model.compile(loss="mse", optimizer=keras.optimizers.SGD(learning_rate=learning_rate))
    return model


def early_stopping() -> Any:
    import keras

    return keras.callbacks.EarlyStopping(patience=PATIENCE, restore_best_weights=True)


# -- hpsearch ---------------------------------------------------------------------------------------------


def run_hpsearch(data: Path, budget: float, seed: int, folder: Path, extra: list[str] = ()) -> dict[str, Any]:
    """The whole command (``extra``: the ablation's one change, ``--set`` syntax); its timeline read back from the
    trials' runs and logged models afterwards."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    sets = ["search.strategy=optuna", "search.cv=null", "search.n_trials=100000", f"search.timeout={budget}",
            "search.final=auto", "training.backend=auto", f"training.epochs={EPOCHS}",
            f"training.early_stopping={{patience: {PATIENCE}}}",
            f"seed={seed}", "data.seed=42", f"data.path={data}", f"tracking.uri={uri}",
            f"search.storage=sqlite:///{folder / 'optuna.db'}", "tracking.report=false", *extra]
    command = [sys.executable, "-m", "hpsearch", "run", str(CHAPTER_STUDY), *[a for s in sets for a in ("--set", s)]]
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["JAX_COMPILATION_CACHE_DIR"] = str(folder / "jax-cache")  # cold: a first run on the machine
    started_ms = time.time() * 1000
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env={**env, "HPSEARCH_OFFLINE": "1"}, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"hpsearch run failed: {done.stderr[-3000:]}")
    return {"wall_s": wall, **_hpsearch_record(uri, data, started_ms, wall)}


def _hpsearch_record(uri: str, data: Path, started_ms: float, wall: float) -> dict[str, Any]:
    import mlflow

    split = load_split(data)  # the model hpsearch logged includes its scaler: it takes raw features
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list", max_results=50000)
    study = next(r for r in runs if r.data.tags.get("hpsearch.role") == "study")
    trials = sorted((r for r in runs if r.data.tags.get("hpsearch.role") == "trial"), key=lambda r: r.info.end_time)
    timeline, best = [], math.inf
    for trial in trials:
        score = trial.data.metrics.get("score")
        if trial.data.tags.get("hpsearch.state") != "finished" or score is None or -score >= best:
            continue
        best = -score
        model = mlflow.sklearn.load_model(f"runs:/{trial.info.run_id}/model")
        timeline.append({"t": (trial.info.end_time - started_ms) / 1000, "valid_mse": best,
                         "test_mse": mse(model, split.X_test, split.y_test)})
    metrics, tags = study.data.metrics, study.data.tags
    timeline.append({"t": wall, "valid_mse": -metrics["final_valid_score"], "test_mse": -metrics["test_score"]})
    return {"trials": int(metrics["trials"]), "trials_finished": int(metrics["trials_finished"]),
            "valid_mse": -metrics["final_valid_score"], "test_mse": -metrics["test_score"], "timeline": timeline,
            "delivered": tags.get("hpsearch.final"), "backend": study.data.params.get("backend")}


# -- the rivals -------------------------------------------------------------------------------------------


def run_optuna(data: Path, budget: float, seed: int, folder: Path) -> dict[str, Any]:
    import keras
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    split = load_split(data).scaled()
    keras.utils.set_random_seed(seed)
    clock, best = Clock(), {"val": math.inf, "model": None}

    class ReportValLoss(keras.callbacks.Callback):
        def __init__(self, trial: optuna.Trial) -> None:
            super().__init__()
            self.trial, self.pruned = trial, False

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.trial.report(float(logs["val_loss"]), epoch)
            if self.trial.should_prune():
                self.pruned = self.model.stop_training = True

    def objective(trial: optuna.Trial) -> float:
        keras.backend.clear_session()
        model = chapter_build_model(trial.suggest_int("n_hidden", 0, 3), trial.suggest_int("n_neurons", 1, 99),
                                    trial.suggest_float("learning_rate", 3e-4, 3e-2, log=True))
        reporter = ReportValLoss(trial)
        model.fit(split.X_train, split.y_train, epochs=EPOCHS, batch_size=BATCH, verbose=0,
                  validation_data=(split.X_valid, split.y_valid), callbacks=[early_stopping(), reporter])
        if reporter.pruned:
            raise optuna.TrialPruned()
        val = float(model.evaluate(split.X_valid, split.y_valid, verbose=0))
        if not math.isfinite(val):
            raise optuna.TrialPruned()  # a diverged trial: what users do with NaN losses
        if val < best["val"]:
            best.update(val=val, model=model)
            clock.improved(val, model, split.X_test, split.y_test)
        return val

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=EPOCHS))
    study.optimize(objective, timeout=budget)
    wall = clock.now()
    finished = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    return _rival_row(wall, len(study.trials), finished, best["val"], best["model"], split, clock)


def run_keras_tuner(data: Path, budget: float, seed: int, folder: Path) -> dict[str, Any]:
    import keras
    import keras_tuner as kt

    split = load_split(data).scaled()
    keras.utils.set_random_seed(seed)
    clock = Clock()
    deadline = time.perf_counter() + budget

    def build(hp: Any) -> Any:
        return chapter_build_model(hp.Int("n_hidden", 0, 3), hp.Int("n_neurons", 1, 99),
                                   hp.Float("learning_rate", 3e-4, 3e-2, sampling="log"))

    class AtTheBudget(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if time.perf_counter() >= deadline:
                self.model.stop_training = True

    tuner = kt.Hyperband(build, objective="val_loss", max_epochs=EPOCHS, factor=3, seed=seed,
                         directory=str(folder / "kt"), project_name="chapter10", overwrite=True)
    populate, best = tuner.oracle.populate_space, {"val": math.inf}

    def within_budget(trial_id: str) -> dict[str, Any]:
        _note_best(tuner, best, clock, split)
        if time.perf_counter() >= deadline:
            return {"status": "STOPPED", "values": None}
        return populate(trial_id)

    tuner.oracle.populate_space = within_budget
    tuner.search(split.X_train, split.y_train, epochs=EPOCHS, batch_size=BATCH, verbose=0,
                 validation_data=(split.X_valid, split.y_valid), callbacks=[early_stopping(), AtTheBudget()])
    wall = clock.now()
    model = tuner.get_best_models(1)[0]
    valid = tuner.oracle.get_best_trials(1)[0].score
    finished = sum(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
    return _rival_row(wall, len(tuner.oracle.trials), finished, valid, model, split, clock)


def _note_best(tuner: Any, best: dict[str, float], clock: Clock, split: Any) -> None:
    """Between trials: if the best trial changed, the model KerasTuner would now hand over, on the timeline."""
    top = tuner.oracle.get_best_trials(1)
    if top and top[0].score is not None and top[0].score < best["val"]:
        best["val"] = top[0].score
        pause = time.perf_counter()
        model = tuner.load_model(top[0])
        clock.paused += time.perf_counter() - pause
        clock.improved(top[0].score, model, split.X_test, split.y_test)


def run_chapter(data: Path, budget: float, seed: int, folder: Path) -> dict[str, Any]:
    """RandomizedSearchCV(keras_reg, param_distribs, n_iter=10, cv=3).fit(...) as the chapter writes it."""
    import keras
    from scikeras.wrappers import KerasRegressor
    from scipy.stats import reciprocal
    from sklearn.model_selection import RandomizedSearchCV

    split = load_split(data).scaled()
    keras.utils.set_random_seed(seed)
    clock = Clock()
    # scikeras 0.13 silently drops fit(callbacks=...): the EarlyStopping goes where scikeras applies it
    keras_reg = KerasRegressor(chapter_build_model, n_hidden=1, n_neurons=30, learning_rate=3e-3, verbose=0,
                               batch_size=BATCH, callbacks=[early_stopping()])
    param_distribs = {"n_hidden": [0, 1, 2, 3], "n_neurons": np.arange(1, 100),
                      "learning_rate": reciprocal(3e-4, 3e-2)}
    rnd_search_cv = RandomizedSearchCV(keras_reg, param_distribs, n_iter=10, cv=3, random_state=seed)
    rnd_search_cv.fit(split.X_train, split.y_train, epochs=EPOCHS, validation_data=(split.X_valid, split.y_valid))
    wall = clock.now()
    model = rnd_search_cv.best_estimator_
    valid = mse(model, split.X_valid, split.y_valid)
    clock.improved(valid, model, split.X_test, split.y_test)
    clock.timeline[-1]["t"] = wall
    return _rival_row(wall, 10, 10, valid, model, split, clock)


def _rival_row(wall: float, trials: int, finished: int, valid: float, model: Any, split: Any,
               clock: Clock) -> dict[str, Any]:
    test = mse(model, split.X_test, split.y_test) if model is not None else math.nan
    timeline = [*clock.timeline, {"t": wall, "valid_mse": valid, "test_mse": test}]
    import keras

    return {"wall_s": wall, "trials": trials, "trials_finished": finished, "valid_mse": float(valid),
            "test_mse": test, "timeline": timeline, "delivered": "best by validation",
            "backend": keras.config.backend()}


RUNNERS = {"hpsearch": run_hpsearch, "optuna": run_optuna, "keras_tuner": run_keras_tuner, "chapter": run_chapter}


def provenance() -> dict[str, Any]:
    """Commit, date, machine and package versions of a run."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "hpsearch"], cwd=REPO, capture_output=True, text=True)
    versions = {}
    for package in ("keras", "tensorflow", "jax", "scikeras", "scikit-learn", "optuna", "keras-tuner", "mlflow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"commit": commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else ""),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions,
            "machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.machine()}, "
                       f"Python {platform.python_version()}"}


def main() -> None:
    global EPOCHS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("contender", choices=CONTENDERS)
    parser.add_argument("--budget", type=float, required=True, help="seconds of searching (chapter: ignored)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", required=True, help="the JSON file of this run")
    parser.add_argument("--data", default=None)
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="at most this many epochs (smoke runs only)")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="hpsearch only: one more study override (the ablation's variant)")
    args = parser.parse_args()
    EPOCHS = args.epochs
    data = data_file(args.data)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix=f"hpsearch-bench-{args.contender}-") as folder:
        extra = {"extra": args.overrides} if args.overrides else {}
        row = RUNNERS[args.contender](data, args.budget, args.seed, Path(folder), **extra)
    row.update(contender=args.contender, variant=", ".join(args.overrides) or "default",
               budget_s=None if args.contender == "chapter" else args.budget, seed=args.seed, **provenance())
    Path(args.out).write_text(json.dumps(row, indent=1), encoding="utf-8")
    print(f"{args.contender} budget {args.budget:.0f} s seed {args.seed}: test MSE {row['test_mse']:.4f}, "
          f"{row['trials']} trials, {row['wall_s']:.1f} s", flush=True)


if __name__ == "__main__":
    main()
