"""A study's interactive report: one self-contained HTML page (``report/report.html``, opened in MLflow's artifact
viewer or any browser, offline: plotly's script is inside).

Optuna's own plotly visualisations of the finished trials (optimisation history, parallel coordinates, slice,
hyperparameter importances) and of every trial's validation loss per epoch (intermediate values: pruned trials
included), then plotly figures of what Optuna does not draw: every trial's learning curves in one chart, and the
score against the learning rate. The study's strategy does not matter: the page is drawn from the MLflow record.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go

from hpsearch.guidance.importance import optuna_study, param_names
from hpsearch.tracking.recorded import StudyRecord


def _curves_study(record: StudyRecord) -> optuna.Study:
    """An in-memory Optuna study whose trials carry each trial's validation loss per epoch as intermediate
    values (finished trials as complete, the rest as pruned), for Optuna's intermediate-values plot."""
    study = optuna.create_study(study_name=record.name, direction="maximize")
    for trial in record.trials:
        values = {step: value for step, value in trial.curves.get("val_loss", []) if math.isfinite(value)}
        if values:
            state = optuna.trial.TrialState.COMPLETE if trial.finished else optuna.trial.TrialState.PRUNED
            study.add_trial(optuna.trial.create_trial(state=state, value=trial.score if trial.finished else None,
                                                      intermediate_values=values))
    return study


def _learning_curves(record: StudyRecord) -> go.Figure:
    """Every trial's ``val_loss`` per epoch in one chart (hover: trial, state, score)."""
    figure = go.Figure()
    for trial in record.trials:
        points = [(step + 1, value) for step, value in trial.curves.get("val_loss", []) if math.isfinite(value)]
        if points:
            label = f"trial {trial.number} ({f'score {trial.score:.4g}' if trial.finished else trial.state})"
            figure.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines",
                                        name=label, opacity=1.0 if trial.finished else 0.4))
    return figure.update_layout(title=f"{record.name}: validation loss per epoch, every trial"
                                      f"{' (fold 0)' if record.cv else ''}",
                                xaxis_title="epoch", yaxis_title="val_loss", yaxis_type="log")


def _score_vs_learning_rate(record: StudyRecord) -> go.Figure | None:
    trials = [t for t in record.finished if isinstance(t.params.get("learning_rate"), (int, float))]
    if len(trials) < 2:
        return None
    figure = go.Figure(go.Scatter(x=[t.params["learning_rate"] for t in trials], y=[t.score for t in trials],
                                  mode="markers", text=[f"trial {t.number}" for t in trials]))
    return figure.update_layout(title=f"{record.name}: score vs learning rate", xaxis_type="log",
                                xaxis_title="learning_rate", yaxis_title=f"score ({record.scoring})")


def figures(record: StudyRecord) -> list[go.Figure]:
    """The page's figures, those the record can support (Optuna's need two finished trials)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    drawn: list[Any] = []
    if len(record.finished) >= 2:
        study, vis = optuna_study(record), optuna.visualization
        drawn += [vis.plot_optimization_history(study), vis.plot_parallel_coordinate(study)]
        if param_names(record.finished):
            drawn += [vis.plot_slice(study), vis.plot_param_importances(study)]
    curves = _curves_study(record)
    if curves.trials:
        drawn += [optuna.visualization.plot_intermediate_values(curves)
                  .update_layout(title=f"{record.name}: val_loss per epoch (Optuna's intermediate values)")]
        drawn.append(_learning_curves(record))
    drawn.append(_score_vs_learning_rate(record))
    return [figure for figure in drawn if figure is not None]


def write_html(record: StudyRecord, path: Path) -> bool:
    """Write the page to ``path``; False (nothing written) when there is nothing to draw."""
    drawn = figures(record)
    if not drawn:
        return False
    body = "\n".join(figure.to_html(full_html=False, include_plotlyjs=k == 0) for k, figure in enumerate(drawn))
    title = html.escape(f"hpsearch study {record.name}")
    path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
                    f"<h1>{title}</h1><p>{len(record.trials)} trials, {len(record.finished)} finished; scoring "
                    f"{html.escape(record.scoring)}, greater is better.</p>{body}</body></html>", encoding="utf-8")
    return True
