"""What MLflow holds for one study: the contract users and tests rely on, and the names other layers write.

- an experiment per study (``tracking.experiment`` or the study name);
- one *study run* (tag ``hpsearch.role=study``): the study file, strategy, space, data fingerprint,
  package versions and seed; at the end the best params/score, the delivered model's validation and test
  scores and the delivered model (``model/``, loads with ``mlflow.sklearn.load_model``);
- one *trial run* per trial (child: tag ``mlflow.parentRunId``): sampled params, per-epoch curves
  as step metrics (``loss``, ``val_loss``, every compiled metric; :func:`fold_prefix` prefixed when
  cross-validating), ``score``/``score_std``/``fold<k>/score``, ``epochs``, ``duration_s``, tag
  ``hpsearch.state`` (finished / pruned / failed) and ``hpsearch.reason``, and the trained model
  (the first fold's) under ``model/``.
Metrics go out in batches (``log_batch``), at most one call every five seconds per trial.
"""

from __future__ import annotations

# a trial's state -> its run's MLflow status
STATUS = {"finished": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}
RESUMED_FOLDS_TAG = "hpsearch.resumed_folds"  # folds of a trial taken from an earlier run (the fold ledger)


def fold_prefix(fold: int, cross_validating: bool) -> str:
    """The prefix of one fold's curves: ``fold<k>/`` under cross-validation, none on a holdout split."""
    return f"fold{fold}/" if cross_validating else ""


def resumed_folds(folds: list[int]) -> dict[str, str]:
    """The tag naming the folds a trial took from an earlier run."""
    return {RESUMED_FOLDS_TAG: ",".join(str(k) for k in sorted(folds))}
