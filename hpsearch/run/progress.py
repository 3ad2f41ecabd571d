"""Progress on the terminal (rich): a bar over trials and one over the epochs of the current trial, or one line per
trial (``SearchCV(verbose=2)``)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hpsearch.results import NoObserver, TrialResult, params_text


class RichObserver:
    """A TrialObserver drawing two bars; use as a context manager around the search."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                  console=console, transient=False)
        self._trials = self._progress.add_task("trials", total=None, info="")
        self._epochs = self._progress.add_task("epochs", total=1, info="", visible=False)
        self._best: float | None = None

    def __enter__(self) -> RichObserver:
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def search_started(self, n_trials: int) -> None:
        self._progress.update(self._trials, total=n_trials)

    def trial_started(self, number: int, n_folds: int, epochs: int) -> None:
        self._progress.reset(self._epochs, total=n_folds * epochs, visible=True,
                             description=f"trial {number}", info="")

    def epoch_ended(self, fold: int, epoch: int, logs: dict[str, float]) -> None:
        shown = " ".join(f"{k}={v:.4g}" for k, v in logs.items() if k in ("loss", "val_loss"))
        self._progress.update(self._epochs, advance=1, info=f"fold {fold} {shown}")

    def trial_ended(self, result: TrialResult) -> None:
        if result.state == "finished" and (self._best is None or result.score > self._best):
            self._best = result.score
        best = f"best score {self._best:.5g}" if self._best is not None else ""
        self._progress.update(self._trials, advance=1, info=best)
        self._progress.update(self._epochs, visible=False)


class TrialLines(NoObserver):
    """A TrialObserver printing one line as each trial ends: its state, score, params and time."""

    def __init__(self, console: Console) -> None:
        self.console, self.total = console, 0

    def search_started(self, n_trials: int) -> None:
        self.total = n_trials

    def trial_ended(self, result: TrialResult) -> None:
        score = f"score={result.score:.5g} (std {result.score_std:.3g})" if result.state == "finished" else \
            (result.reason or "")
        self.console.print(f"[trial {result.number + 1}/{self.total}] {result.state} {score}; "
                           f"{params_text(result.params)}; {result.duration_s:.1f} s", highlight=False, markup=False,
                           soft_wrap=True)
