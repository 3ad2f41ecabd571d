"""What MLflow holds for one study: the contract users and tests rely on, and the names other layers write.

- an experiment per study (``tracking.experiment`` or the study name);
- one *study run* (tag ``hpsearch.role=study``): the study file, strategy, space, data fingerprint,
  package versions and seed, and the data's splits as MLflow datasets (``training``, ``validation``, ``test``);
  at the end the best params/score, the delivered model's validation score, its test score under the scorer's
  name (``test_score``) and by name (``test_mse``, ``test_accuracy``, ...), the ``trials.json`` table, a
  description listing the best trials, and the delivered model (``model/``, loads with
  ``mlflow.sklearn.load_model``);
- one *trial run* per trial (child: tag ``mlflow.parentRunId``), named ``trial-NNN`` and its params: sampled
  params, the datasets it trained and was scored on, per-epoch curves as step metrics (``loss``, ``val_loss``,
  every compiled metric; under cross-validation the mean over the folds under those names, and each fold's own
  with a :func:`fold_prefix`), ``score``/``score_std``/``fold<k>/score`` (:func:`trial_metrics`; with several
  metrics ``score_<name>`` each, and ``train_<name>`` for the training rows' scores), the named validation metrics
  (``val_mse``, ``val_accuracy``, ...: the mean over folds, at the step after the last epoch), ``epochs``,
  ``duration_s``, tag ``hpsearch.state`` (finished / pruned / failed) and ``hpsearch.reason``, and the trained
  model (the first fold's) under ``model/``.
Metrics go out in batches (``log_batch``), at most one call every five seconds per trial.
"""

from __future__ import annotations

import math

from hpsearch.results import StudyResult, TrialResult, params_text

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


def study_description(result: StudyResult, shown: int = 10) -> str:
    """The study run's description (Markdown, on its page in the UI): the counts, the delivered model's test
    metrics, and the best trials, with a pointer to the rest."""
    counts = ", ".join(f"{sum(t.state == s for t in result.trials)} {s}" for s in ("finished", "pruned", "failed"))
    lines = [f"**{result.name}**: {len(result.trials)} trials ({counts}); scoring `{result.scoring}`, greater is "
             "better."]
    if result.test_metrics:
        tested = ", ".join(f"{name} {value:.4g}" for name, value in result.test_metrics.items())
        lines += ["", f"Delivered model ({result.final or 'refit'}) on the test set: {tested}."]
    best = sorted(result.finished, key=lambda t: t.score, reverse=True)[:shown]
    if best:
        lines += ["", "| trial | score | epochs | params |", "|---|---|---|---|"]
        lines += [f"| {t.number} | {t.score:.5g} | {max(t.fold_epochs, default=0)} | {params_text(t.params)} |"
                  for t in best]
    lines += ["", "Every trial: the `trials.json` table in this run's artifacts, and the trial runs nested under it."]
    return "\n".join(lines)


def trial_metrics(result: TrialResult) -> dict[str, float]:
    """A trial run's final metrics: duration, epochs and, when it finished, its score (mean, std, per fold), every
    metric of a multi-metric scoring (``score_<name>``) and the training rows' scores (``train_<name>``)."""
    metrics = {"duration_s": result.duration_s}
    if result.fold_epochs:
        metrics["epochs"] = max(result.fold_epochs)
    if result.state == "finished":
        metrics.update(score=result.score, score_std=result.score_std)
        metrics.update({f"score_{name}": value for name, value in result.mean_scores().items()})
        metrics.update({f"train_{name}": value for name, value in result.mean_scores(train=True).items()})
        if len(result.fold_scores) > 1:
            metrics.update({f"{fold_prefix(k, True)}score": s for k, s in enumerate(result.fold_scores)})
    return {k: v for k, v in metrics.items() if math.isfinite(v)}
