"""hpsearch inside a scikit-learn pipeline: missing values, a categorical column, a tracked search.

Data: scikit-learn's diabetes set (ships with scikit-learn, offline), with its ``sex`` column as
text categories and 5% of ``bmi`` knocked out, the way real tables arrive.

    python examples/pipeline_search.py          # then: hpsearch ui  (experiment "pipeline-example")
"""

from __future__ import annotations

import numpy as np
from sklearn.compose import make_column_transformer
from sklearn.datasets import load_diabetes
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import hpsearch


def load_table(seed: int = 42):
    """The diabetes table with a text column and missing values, split the chapter's way."""
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    X["sex"] = np.where(X["sex"] > 0, "male", "female")
    X.loc[X.sample(frac=0.05, random_state=seed + 1).index, "bmi"] = np.nan
    return train_test_split(X, y / 100.0, random_state=seed)  # target in hundreds, like MedHouseVal


def main(n_trials: int = 10, epochs: int = 100, experiment: str = "pipeline-example"):
    X_train, X_test, y_train, y_test = load_table()
    preprocessing = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), ["sex"]),
        remainder=make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
    )
    search = hpsearch.SearchCV(
        hpsearch.KerasMLPRegressor(epochs=epochs, early_stopping=10, optimizer="adam"),
        space={"n_hidden": hpsearch.Int(0, 3), "n_neurons": hpsearch.Int(1, 99),
               "learning_rate": hpsearch.Float(3e-4, 3e-2, log=True)},
        strategy="optuna", n_trials=n_trials, cv=3, scoring="neg_mean_squared_error", experiment=experiment)
    pipe = make_pipeline(preprocessing, search).fit(X_train, y_train)
    print("best params:", search.best_params_)
    print(f"best cv score (neg MSE): {search.best_score_:.4f}")
    print(f"test MSE: {np.mean((pipe.predict(X_test) - y_test) ** 2):.4f}")
    return pipe, search


if __name__ == "__main__":
    main()
