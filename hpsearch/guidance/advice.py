"""The chapter's tuning advice, applied to a study file: warnings with a one-line reason."""

from __future__ import annotations

from dataclasses import dataclass

from hpsearch.config.schema import StudyConfig
from hpsearch.space.dimensions import Categorical, Dimension, Fixed, Float, Int


@dataclass(frozen=True)
class Advice:
    """One warning: the field it is about and the chapter's reason."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _is_pyramid(widths: object) -> bool:
    return isinstance(widths, (list, tuple)) and len(widths) > 1 and all(
        a > b for a, b in zip(widths, widths[1:]))


def _uniform_wide_ranges(space: dict[str, Dimension]) -> list[Advice]:
    advice = []
    for name, dim in space.items():
        if isinstance(dim, Float) and not dim.log and dim.low > 0 and dim.high / dim.low > 10:
            advice.append(Advice(f"search.space.{name}", f"spans {dim.high / dim.low:.0f}x sampled uniformly: most "
                                 "samples land in the top decade; add log: true (the chapter's reciprocal)"))
    return advice


def advise(study: StudyConfig) -> list[Advice]:
    """Every piece of the chapter's advice this study ignores (empty when it follows them all)."""
    space, params = study.search.space, study.model.params
    advice = _uniform_wide_ranges(space)
    stopping = study.training.early_stopping
    if stopping is None and study.training.epochs >= 50:
        advice.append(Advice("training.early_stopping", f"off with {study.training.epochs} epochs: without it a "
                             "big network overfits; the chapter's 'stretch pants' rely on early stopping"))
    if stopping is not None and stopping.monitor.startswith("val_") and study.data.valid_size == 0:
        advice.append(Advice("data.valid_size", "is 0, so early stopping watches the training loss; keep a "
                             "validation split to stop on generalisation, not memorisation"))
    optimizer = space.get("optimizer")
    rate = space.get("learning_rate")
    if isinstance(optimizer, Categorical) and (rate is None or isinstance(rate, Fixed)) and rate != Fixed("auto"):
        advice.append(Advice("search.space.learning_rate", "is fixed while the optimizer is searched: the best "
                             "learning rate depends on the optimizer; search it too (or learning_rate: auto)"))
    chosen = params.get("optimizer", getattr(optimizer, "value", None))
    sgd = chosen in (None, "sgd") and not isinstance(optimizer, Categorical)
    if study.model.factory == "mlp" and sgd and "learning_rate" not in params and rate is None:
        advice.append(Advice("model.params.learning_rate", "SGD is left at the factory's default rate; the learning "
                             "rate matters most: search it, or find it with `hpsearch lr-find`"))
    widths = [params.get("n_neurons")]
    if isinstance(space.get("n_neurons"), Categorical):
        widths += list(space["n_neurons"].choices)
    if any(_is_pyramid(w) for w in widths):
        advice.append(Advice("n_neurons", "per-layer widths form a pyramid; the same width in every layer usually "
                             "does as well or better, with one hyperparameter instead of many"))
    depth = space.get("n_hidden")
    if isinstance(depth, Int) and depth.low > 3:
        advice.append(Advice("search.space.n_hidden", f"starts at {depth.low} layers; start with 1-2 hidden layers "
                             "and ramp up until the network overfits"))
    return advice
