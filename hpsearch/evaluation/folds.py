"""Where candidates train and are scored: CV folds or the holdout split, and each task's default scorer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import check_cv
from sklearn.utils import _safe_indexing
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import _check_method_params

from hpsearch.errors import DataError

DEFAULT_SCORING = {"regression": "neg_mean_squared_error", "binary": "accuracy",
                   "multiclass": "accuracy", "multilabel": "accuracy"}


@dataclass
class Splits:
    """Where candidates train and are scored: CV folds over (X, y), or (no folds) the holdout set.

    ``X_valid``/``y_valid`` is the holdout scoring set, and with folds the early-stopping set.
    ``fit_params`` go to every fit; those with one value per row of X (``sample_weight``) are split with the rows,
    as scikit-learn's searches split them.
    """

    X: Any
    y: Any
    folds: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    X_valid: Any = None
    y_valid: Any = None
    fit_params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_folds(self) -> int:
        return max(len(self.folds), 1)

    def fold(self, k: int) -> tuple[Any, ...]:
        """(X_fit, y_fit, fit_params, X_score, y_score, validation) of fold ``k``."""
        if not self.folds:
            return self.X, self.y, self.fit_params, self.X_valid, self.y_valid, (self.X_valid, self.y_valid)
        train, test = self.folds[k]
        X_test, y_test = _safe_indexing(self.X, test), _safe_indexing(self.y, test)
        validation = (self.X_valid, self.y_valid) if self.X_valid is not None else (X_test, y_test)
        fit_params = _check_method_params(self.X, self.fit_params, indices=train)
        return _safe_indexing(self.X, train), _safe_indexing(self.y, train), fit_params, X_test, y_test, validation


def make_folds(X: Any, y: Any, cv: Any, classifier: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """CV folds (stratified for classifiers), refusing data too small for them."""
    n_rows = len(y)
    n_splits = cv if isinstance(cv, int) else getattr(cv, "n_splits", 2)
    if n_rows < n_splits:
        raise DataError(f"search.cv={n_splits} folds but there are only {n_rows} training rows")
    if classifier and isinstance(cv, int) and type_of_target(y) in ("binary", "multiclass"):
        smallest = int(np.unique(np.asarray(y), return_counts=True)[1].min())
        if smallest < cv:
            raise DataError(f"search.cv={cv} folds but the rarest class has only {smallest} training rows; "
                            "lower search.cv or use a holdout split (search.cv: null)")
    return list(check_cv(cv, y, classifier=classifier).split(X, y))
