"""scikit-learn's own estimator checks on hpsearch's estimators and on SearchCV itself (tiny epochs, a two-point
grid, two folds).

Checks expected to fail are listed with the reason; each comes from scikeras 0.13 itself or from
what minibatch gradient descent is, not from hpsearch's wrappers.
"""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from hpsearch.models.mlp_estimators import KerasMLPClassifier, KerasMLPRegressor
from hpsearch.run.search_cv import SearchCV

COMMON = {
    "check_estimator_tags_renamed": "scikeras 0.13 defines _more_tags (its pre-1.6 tags); hpsearch adds "
                                    "__sklearn_tags__ on top, which the check does not look for",
    "check_mixin_order": "scikeras 0.13 puts BaseEstimator before ClassifierMixin/RegressorMixin; the MRO cannot "
                         "be reordered in a subclass (hpsearch fixes the tags instead)",
    "check_n_features_in_after_fitting": "scikeras checks the feature count itself, with its own error message",
}
COMMON["check_supervised_y_2d"] = ("scikeras takes a column-vector y as is, without the DataConversionWarning "
                                  "scikit-learn's own estimators give")
COMMON.update(dict.fromkeys(
    ["check_sample_weight_equivalence_on_dense_data", "check_sample_weight_equivalence_on_sparse_data"],
    "minibatch SGD with sample weights is not the same computation as repeating rows"))
EXPECTED = {
    "KerasMLPRegressor": {**COMMON, "check_requires_y_none": "scikeras fails on y=None before it can say "
                                                             "'requires y to be passed'"},
    "KerasMLPClassifier": COMMON,
}
SETTINGS = {"epochs": 2, "n_neurons": 8, "optimizer": "adam", "learning_rate": 0.01, "validation_split": 0.0}


@parametrize_with_checks([KerasMLPRegressor(**SETTINGS), KerasMLPClassifier(**SETTINGS)],
                         expected_failed_checks=lambda est: EXPECTED[type(est).__name__])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


# SearchCV delegates predict/score to the scikeras estimator it delivers: these two come from it (see COMMON)
SEARCH_EXPECTED = {name: COMMON[name] for name in ("check_n_features_in_after_fitting", "check_supervised_y_2d")}


@parametrize_with_checks([SearchCV(KerasMLPRegressor(**SETTINGS), {"n_neurons": [4, 8]}, strategy="grid", cv=2,
                                   tracking=False)],
                         expected_failed_checks=lambda est: SEARCH_EXPECTED)
def test_searchcv_is_a_scikit_learn_estimator(estimator, check):
    check(estimator)
