"""A study's report: PNG plots of what MLflow recorded (the layout is in :mod:`hpsearch.tracking`).

:func:`write_report` draws a :class:`~hpsearch.tracking.recorded.StudyRecord` (read from MLflow by
:func:`hpsearch.tracking.reading.collect`) on matplotlib's Agg canvas (no pyplot, no Keras, no MLflow) and skips each
plot the record cannot support, e.g. the score plots when no trial finished.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from hpsearch.guidance.html_report import write_html
from hpsearch.guidance.importance import param_importances, param_names, spans_decade
from hpsearch.space.dimensions import is_number
from hpsearch.tracking.recorded import StudyRecord, TrialRecord

MAX_CURVE_PANELS = 12
_log = logging.getLogger(__name__)


def _finite(value: float) -> bool:
    return math.isfinite(value) and abs(value) < sys.float_info.max  # SQL stores keep +-inf as +-max float


def curve_x(steps: Sequence[int], training: bool) -> list[float]:
    """x of per-epoch points logged at 0-based ``steps``: epoch i (1-based) is validated at its end, x = i;
    its training loss is the running mean over the epoch, centred half an epoch earlier, x = i - 0.5."""
    return [step + (0.5 if training else 1.0) for step in steps]


def normalise(values: Sequence[float]) -> tuple[np.ndarray, bool]:
    """``values`` scaled to [0, 1] (NaN kept; 0.5 if constant), in log10 when they span over a decade."""
    array = np.asarray(values, dtype=float)
    low, high = np.nanmin(array), np.nanmax(array)
    log = bool(spans_decade(low, high))
    if log:
        array, low, high = np.log10(array), math.log10(low), math.log10(high)
    return (np.full_like(array, 0.5) if high == low else (array - low) / (high - low)), log


def _numeric(trials: Sequence[TrialRecord], name: str) -> tuple[list[float], str] | None:
    """Param ``name`` per trial as a float (NaN where absent, a list's mean for layer lists) and its label."""
    present = [t.params[name] for t in trials if name in t.params]
    if not present or not all(is_number(v) or isinstance(v, list) for v in present):
        return None
    values = [float(np.mean(t.params[name])) if name in t.params else math.nan for t in trials]
    return values, name + (" (lists: mean width)" if any(isinstance(v, list) for v in present) else "")


def _score_label(record: StudyRecord) -> str:
    return f"score ({record.scoring}, greater is better)"


def _mark_unscored(ax: Any, trials: Sequence[TrialRecord], x: Callable[[TrialRecord], float]) -> None:
    """Pruned and failed trials have no score: markers on the bottom edge, at their x."""
    for state, marker, colour in (("pruned", "v", "tab:gray"), ("failed", "x", "tab:red")):
        xs = [x(t) for t in trials if t.state == state]
        if xs:
            ax.scatter(xs, [0.0] * len(xs), transform=ax.get_xaxis_transform(), marker=marker, color=colour,
                       clip_on=False, zorder=3, label=f"{state} (no score)")


def _learning_curves(record: StudyRecord) -> Figure | None:
    drawable = [t for t in record.trials if any(_finite(v) for _, v in t.curves["loss"] + t.curves["val_loss"])]
    chosen = sorted(drawable, key=lambda t: (not t.finished, -(t.score or 0.0), t.number))[:MAX_CURVE_PANELS]
    if not chosen:
        return None
    cols = min(4, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig = Figure(figsize=(3.4 * cols, 2.8 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, trial in zip(axes, chosen):
        for key, training, style, label in (("loss", True, "o-", "training"), ("val_loss", False, "s-", "validation")):
            points = [(s, v) for s, v in trial.curves[key] if _finite(v)]
            ax.plot(curve_x([s for s, _ in points], training), [v for _, v in points], style, markersize=3, label=label)
        ax.set_xlim(left=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel="loss",
               title=f"trial {trial.number}: " + (f"score {trial.score:.4g}" if trial.finished else trial.state))
    for ax in axes[len(chosen):]:
        ax.set_visible(False)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{record.name}: learning curves of the best {len(chosen)} trials{', fold 0' if record.cv else ''}\n"
                 "(training loss is the mean over the epoch, so it sits half an epoch left of validation)")
    return fig


def _score_vs(record: StudyRecord, names: Sequence[str], title: str, log_x: bool = False) -> Figure | None:
    """One panel of score vs each numeric param of ``names``; pruned/failed trials marked on the bottom edge."""
    columns = [c for c in (_numeric(record.trials, n) for n in names) if c is not None]
    if not columns or not record.finished:
        return None
    fig = Figure(figsize=(5.5 * len(columns), 4.5), layout="constrained")
    for ax, (values, label) in zip(fig.subplots(1, len(columns), squeeze=False).ravel(), columns):
        x = {t.number: v for t, v in zip(record.trials, values)}
        ax.scatter([x[t.number] for t in record.finished], [t.score for t in record.finished], label="finished")
        _mark_unscored(ax, record.trials, lambda t, x=x: x[t.number])
        if log_x:
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel=label + (" (log scale)" if log_x else ""), ylabel=_score_label(record))
        ax.legend(fontsize="small")
    fig.suptitle(f"{record.name}: {title}")
    return fig


def _optimization_history(record: StudyRecord) -> Figure | None:
    finished = record.finished
    if not finished:
        return None
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    numbers, scores = [t.number for t in finished], [t.score for t in finished]
    ax.scatter(numbers, scores, label="trial score")
    ax.step(numbers, np.maximum.accumulate(scores), where="post", color="tab:orange", label="best so far")
    _mark_unscored(ax, record.trials, lambda t: t.number)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="trial number", ylabel=_score_label(record), title=f"{record.name}: optimization history")
    ax.legend(fontsize="small")
    return fig


def _parallel_coordinates(record: StudyRecord) -> Figure | None:
    finished = record.finished
    columns = [c for c in (_numeric(finished, n) for n in param_names(finished)) if c is not None]
    if not columns:
        return None
    scores = [t.score for t in finished]
    columns.append((scores, "score"))
    scaled = [normalise(values) for values, _ in columns]
    fig = Figure(figsize=(2.4 * len(columns) + 2, 4.8), layout="constrained")
    ax = fig.subplots()
    norm, cmap = Normalize(min(scores), max(scores)), colormaps["viridis"]
    for row, score in enumerate(scores):
        ax.plot(range(len(columns)), [s[row] for s, _ in scaled], color=cmap(norm(score)), alpha=0.8)
    for i, (values, _) in enumerate(columns):
        ax.axvline(i, color="black", linewidth=0.8)
        ax.annotate(f"{np.nanmin(values):.3g}", (i, -0.04), ha="center", va="top", fontsize="small")
        ax.annotate(f"{np.nanmax(values):.3g}", (i, 1.04), ha="center", va="bottom", fontsize="small")
    ax.set_xticks(range(len(columns)), [label.replace(" (", "\n(") + ("\n(log scale)" if log else "")
                                         for (_, label), (_, log) in zip(columns, scaled)])
    ax.set(xlim=(-0.4, len(columns) - 0.6), ylim=(-0.15, 1.15), yticks=[],
           title=f"{record.name}: finished trials, each axis scaled to [0, 1]")
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=_score_label(record))
    return fig


def _importance_plot(record: StudyRecord, importances: dict[str, float]) -> Figure | None:
    if not importances:
        return None
    fig = Figure(figsize=(6.5, 1.2 + 0.5 * len(importances)), layout="constrained")
    ax = fig.subplots()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set(xlabel="importance (sums to 1)", xlim=(0, 1),
           title=f"{record.name}: hyperparameter importance (Optuna, {len(record.finished)} finished trials)")
    return fig


def write_report(record: StudyRecord, folder: Path, html: bool = True) -> list[Path]:
    """Write the report's PNGs and (``html``) its interactive page, ``report.html``
    (:mod:`hpsearch.guidance.html_report`); returns the files written. A page plotly cannot draw is a warning:
    the PNGs are written all the same."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    figures = {
        "learning_curves.png": _learning_curves(record),
        "score_vs_learning_rate.png": _score_vs(record, ["learning_rate"], "score vs learning rate", log_x=True),
        "score_vs_depth_width.png": _score_vs(record, ["n_hidden", "n_neurons"], "score vs depth and width"),
        "optimization_history.png": _optimization_history(record),
        "parallel_coordinates.png": _parallel_coordinates(record),
        "param_importance.png": _importance_plot(record, param_importances(record)),
    }
    written = []
    for name, fig in figures.items():
        if fig is not None:
            FigureCanvasAgg(fig).print_png(folder / name)
            written.append(folder / name)
    if html:
        try:
            if write_html(record, folder / "report.html"):
                written.append(folder / "report.html")
        except Exception as exc:  # noqa: BLE001  (the PNGs stand on their own)
            _log.warning("hpsearch: the interactive report.html was not written (%s: %s); the PNGs were",
                         type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
    return written


def report_process_main() -> int:
    """``python -m hpsearch.guidance.report``: the tracker's report process, started while the best model is refitted.

    Its imports run first; then it reads one JSON line ``{"folder", "record"}`` from stdin (EOF:
    the study ended without a report) and draws the record (:meth:`StudyRecord.to_dict`) into the folder, which
    the tracker attaches to the study run. A failure is one line on stderr and exit code 1.
    """
    logging.basicConfig(format="%(message)s", level=logging.WARNING)  # warnings: stderr, which the tracker relays
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    try:
        request = json.loads(line)
        write_report(StudyRecord.from_dict(request["record"]), Path(request["folder"]))
    except Exception as exc:  # reported by the tracker as a warning: the study is recorded already
        print(f"{type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(report_process_main())
