"""hpsearch with the splitters real data needs: rows grouped by where they come from, and a time series.

Two searches, each scored on splits that do not leak:

- **grouped**: readings from 12 machines, each machine with its own offset. Random K-fold would put rows of
  one machine on both sides of a split and reward memorising machines; ``GroupKFold`` with
  ``fit(groups=machine)`` scores on machines the model never saw.
- **time series**: a daily signal with a trend and a weekly cycle, predicted from its last 14 days.
  ``TimeSeriesSplit`` trains on the past and scores on the future only.

Both are tracked in MLflow (experiments ``grouped-example`` and ``time-series-example``) and score two metrics
(``refit`` picks the one the search optimises).

    python examples/grouped_and_time_series.py          # then: hpsearch ui
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import GroupKFold, TimeSeriesSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import hpsearch

SCORING = {"mse": "neg_mean_squared_error", "mae": "neg_mean_absolute_error"}


def machines(n_machines: int = 12, rows_each: int = 150, seed: int = 0):
    """(X, y, machine): 6 sensor readings per row; y depends on them and on the machine's own offset."""
    rng = np.random.default_rng(seed)
    machine = np.repeat(np.arange(n_machines), rows_each)
    X = rng.normal(size=(len(machine), 6)).astype("float32")
    offset = rng.normal(scale=2.0, size=n_machines)[machine]
    y = (np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.5 * X[:, 3] + offset + rng.normal(scale=0.1, size=len(machine)))
    return X, y.astype("float32"), machine


def daily_series(days: int = 1500, lags: int = 14, seed: int = 0):
    """(X, y): the last ``lags`` days as features, the next day as target, in time order."""
    rng = np.random.default_rng(seed)
    t = np.arange(days + lags)
    signal = 0.002 * t + np.sin(2 * np.pi * t / 7) + 0.3 * rng.normal(size=len(t))
    X = np.stack([signal[i:i + lags] for i in range(days)]).astype("float32")
    return X, signal[lags:lags + days].astype("float32")


def search(epochs: int, n_trials: int, experiment: str) -> hpsearch.SearchCV:
    return hpsearch.SearchCV(
        make_pipeline(StandardScaler(), hpsearch.KerasMLPRegressor(epochs=epochs, early_stopping=5, optimizer="adam")),
        space={"kerasmlpregressor__n_hidden": hpsearch.Int(1, 3), "kerasmlpregressor__n_neurons": hpsearch.Int(8, 64),
               "kerasmlpregressor__learning_rate": hpsearch.Float(1e-3, 3e-2, log=True)},
        strategy="optuna", n_trials=n_trials, scoring=SCORING, refit="mse", experiment=experiment)


def main(epochs: int = 50, n_trials: int = 8) -> tuple[hpsearch.SearchCV, hpsearch.SearchCV]:
    X, y, machine = machines()
    grouped = search(epochs, n_trials, "grouped-example").set_params(cv=GroupKFold(n_splits=4))
    grouped.fit(X, y, groups=machine)
    print(f"grouped: best params {grouped.best_params_}, MSE on unseen machines {-grouped.best_score_:.3f}, "
          f"MAE {-grouped.cv_results_['mean_test_mae'][grouped.best_index_]:.3f}")

    X, y = daily_series()
    forecast = search(epochs, n_trials, "time-series-example").set_params(cv=TimeSeriesSplit(n_splits=4))
    forecast.fit(X, y)
    print(f"time series: best params {forecast.best_params_}, MSE on later days {-forecast.best_score_:.3f}")
    return grouped, forecast


if __name__ == "__main__":
    main()
