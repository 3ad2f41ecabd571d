"""The learning-rate range test (Hands-On ML ch. 10): grow the LR exponentially from 1e-5 to 10 over a
few hundred iterations; the loss falls, then shoots up. The best LR is about half the LR where it
shoots up; the steepest descent of the loss is a second opinion.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpsearch.config.schema import StudyConfig
from hpsearch.errors import ConfigError
from hpsearch.space.dimensions import Float

EXPLODE = 4.0  # the loss "shoots up" once the smoothed loss exceeds 4x its minimum
MIN_ITERATIONS = 50
CHAPTER_RANGE = Float(3e-4, 3e-2, log=True)


@dataclass
class RangeTest:
    """One range test: the recorded series and what it says."""

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    optimizer: str | None = None
    divergence_lr: float | None = None
    suggested_lr: float | None = None
    steepest_lr: float | None = None
    problems: list[str] = field(default_factory=list)

    def search_range(self) -> Float:
        """The log-uniform range ``learning_rate: auto`` searches: around the suggestion, below divergence."""
        if self.suggested_lr is None:
            return CHAPTER_RANGE
        return Float(self.suggested_lr / 5, min(self.suggested_lr * 1.5, self.divergence_lr), log=True)


def check_settings(start: float, end: float, iterations: int) -> None:
    """Refuse a range test that cannot decide anything."""
    if not (0 < start < end <= 100):
        raise ConfigError(f"the learning rates must satisfy 0 < start < end <= 100, got start={start}, end={end}",
                          field="lr-find")
    if iterations < MIN_ITERATIONS:
        raise ConfigError(f"{iterations} iterations are too few to decide; use at least {MIN_ITERATIONS} "
                          "(a few hundred is the chapter's advice)", field="lr-find --iterations")


def smooth(losses: np.ndarray, beta: float = 0.98) -> np.ndarray:
    """Bias-corrected exponential moving average of the finite prefix of ``losses``."""
    out, average = [], 0.0
    for i, loss in enumerate(losses, start=1):
        if not math.isfinite(loss):
            break
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**i))
    return np.array(out)


def exploded(losses: list[float]) -> bool:
    """Whether the loss has shot up (NaN, or smoothed loss above EXPLODE x its minimum)."""
    if not math.isfinite(losses[-1]):
        return True
    smoothed = smooth(np.array(losses))
    return len(smoothed) > 10 and smoothed[-1] > EXPLODE * max(smoothed.min(), 1e-12)


def analyse(lrs: np.ndarray, losses: np.ndarray, optimizer: str | None = None) -> RangeTest:
    """Find the divergence LR, the suggested LR (half of it) and the steepest-descent LR."""
    smoothed = smooth(losses)
    test = RangeTest(lrs, losses, smoothed, optimizer)
    if len(smoothed) < 5:
        test.problems.append(f"the model diverges at the start (loss NaN/inf from lr {lrs[0]:.2g}); "
                             "lower the start learning rate or check the data scaling")
        return test
    lowest = int(np.argmin(smoothed))
    above = np.nonzero(smoothed[lowest:] > EXPLODE * smoothed[lowest])[0]
    if len(above):
        test.divergence_lr = float(lrs[lowest + above[0]])
    elif len(smoothed) < len(losses):  # the raw loss became NaN after the finite prefix
        test.divergence_lr = float(lrs[len(smoothed)])
    if lowest < max(3, len(smoothed) // 20):
        test.problems.append(f"the loss never decreases (it is lowest at lr {lrs[lowest]:.2g}, the start); "
                             "lower the start learning rate")
        return test
    if test.divergence_lr is None:
        test.problems.append(f"the loss did not shoot up by lr {lrs[len(smoothed) - 1]:.2g}; raise the end "
                             "learning rate or the iterations to decide")
        return test
    test.suggested_lr = test.divergence_lr / 2
    test.steepest_lr = _steepest(lrs, smoothed, lowest)
    return test


def _steepest(lrs: np.ndarray, smoothed: np.ndarray, lowest: int) -> float | None:
    """The LR in the middle of the steepest fall of the loss, slopes taken over a window (noise-proof)."""
    window = max(5, len(smoothed) // 15)
    starts = np.arange(len(smoothed) // 10, lowest - window + 1)
    if len(starts) == 0:
        return None
    log_lrs = np.log10(lrs)
    slopes = (smoothed[starts + window] - smoothed[starts]) / (log_lrs[starts + window] - log_lrs[starts])
    return float(lrs[starts[int(np.argmin(slopes))] + window // 2])


def plot(test: RangeTest, path: Path) -> Path:
    """Loss vs learning rate (log x): raw points, the smoothed curve, and the three marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    finite = np.isfinite(test.losses)
    ax.scatter(test.lrs[finite], test.losses[finite], s=6, alpha=0.3, label="loss per batch")
    ax.plot(test.lrs[:len(test.smoothed)], test.smoothed, color="C0", label="smoothed")
    marks = (("divergence_lr", "shoots up", "C3", "-"), ("suggested_lr", "suggested (half)", "C2", "-"),
             ("steepest_lr", "steepest descent", "C1", "--"))
    for attribute, label, color, style in marks:
        value = getattr(test, attribute)
        if value is not None:
            ax.axvline(value, color=color, linestyle=style, label=f"{label}: {value:.3g}")
    if len(test.smoothed):
        low = min(np.nanmin(test.smoothed), np.min(test.losses[finite]))
        high = np.nanmax(test.smoothed)
        ax.set_ylim(low - 0.05 * abs(low), min(high, EXPLODE * 1.5 * np.nanmin(test.smoothed)) * 1.05)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss")
    ax.set_title(f"Learning-rate range test{f' ({test.optimizer})' if test.optimizer else ''}")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def range_test(new_estimator: Callable[[dict[str, Any]], Any], params: dict[str, Any], X: Any, y: Any,
               scale: str, seed: int, start: float = 1e-5, end: float = 10.0, iterations: int = 300) -> RangeTest:
    """Train ``new_estimator(params)`` (``params`` without a learning rate) under the schedule, on ``X`` scaled
    the study's way (``data.scale``)."""
    from hpsearch.models.backend import fresh_session
    from hpsearch.models.estimator import make_preprocessor
    from hpsearch.models.lr_range import record_range

    check_settings(start, end, iterations)
    fresh_session(seed)
    preprocessor = make_preprocessor(scale)
    if preprocessor is not None:
        X = preprocessor.fit_transform(X)
    lrs, losses = record_range(new_estimator(params), X, y, start, end, iterations, exploded)
    return analyse(lrs, losses, params.get("optimizer"))


def optimizers_of(study: StudyConfig) -> list[Any]:
    """The optimizers to test: each searched one, else the fixed one (None: the factory's default)."""
    searched = study.search.space.get("optimizer")
    if searched is not None and hasattr(searched, "choices"):
        return list(searched.choices)
    return [study.model.params.get("optimizer", getattr(searched, "value", None))]
