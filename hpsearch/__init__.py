"""hpsearch: tracked hyperparameter search for Keras models, the Hands-On ML chapter 10 way.

The public API, re-exported (TensorFlow and MLflow load on first use, not on ``import hpsearch``).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from hpsearch.space.dimensions import Categorical, Fixed, Float, Int

__version__ = "0.1.0"

_LAZY = {
    "SearchCV": "hpsearch.run.search_cv",
    "KerasMLPRegressor": "hpsearch.models.mlp_estimators",
    "KerasMLPClassifier": "hpsearch.models.mlp_estimators",
    "KerasRegressor": "hpsearch.models.wrappers",
    "KerasClassifier": "hpsearch.models.wrappers",
    "build_mlp": "hpsearch.models.mlp",
    "load_best": "hpsearch.tracking.reading",
    "load_study": "hpsearch.config.loading",
    "run_study": "hpsearch.run.study",
    "use_backend": "hpsearch.models.backend_choice",
}
__all__ = ["Categorical", "Fixed", "Float", "Int", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hpsearch' has no attribute {name!r}")
