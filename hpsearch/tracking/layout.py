"""What MLflow holds for one study: the contract users and tests rely on, and the names other layers write.

- an experiment per study (``tracking.experiment`` or the study name);
- one *study run* (tag ``hpsearch.role=study``): the study file, strategy, space, data fingerprint,
  package versions and seed; at the end the best params/score, the delivered model's validation and test
  scores and the delivered model (``model/``, loads with ``mlflow.sklearn.load_model``);
- one *trial run* per trial (child: tag ``mlflow.parentRunId``): sampled params, per-epoch curves as step
  metrics (``loss``, ``val_loss``, every compiled metric; under cross-validation the mean over the folds under
  those names, and each fold's own with a :func:`fold_prefix`), ``score``/``score_std``/``fold<k>/score``,
  ``epochs``, ``duration_s``, tag ``hpsearch.state`` (finished / pruned / failed) and ``hpsearch.reason``, and the
  trained model (the first fold's) under ``model/``.
Metrics go out in batches (``log_batch``), at most one call every five seconds per trial.
"""

from __future__ import annotations

# MLflow 3's kind for this work; its UI opens experiments in GenAI mode unless the address asks for model training
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
UI_MODE = "workflowType=machine_learning"
# a trial's state -> its run's MLflow status
STATUS = {"finished": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}
RESUMED_FOLDS_TAG = "hpsearch.resumed_folds"  # folds of a trial taken from an earlier run (the fold ledger)


def fold_prefix(fold: int, cross_validating: bool) -> str:
    """The prefix of one fold's curves: ``fold<k>/`` under cross-validation, none on a holdout split."""
    return f"fold{fold}/" if cross_validating else ""


def resumed_folds(folds: list[int]) -> dict[str, str]:
    """The tag naming the folds a trial took from an earlier run."""
    return {RESUMED_FOLDS_TAG: ",".join(str(k) for k in sorted(folds))}


def ui_address(base: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """Where the MLflow UI served at ``base`` shows a study's runs (or one of them) in its model-training mode."""
    base = base.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments?{UI_MODE}"
    return f"{base}/#/experiments/{experiment_id}/runs{f'/{run_id}' if run_id else ''}?{UI_MODE}"
