"""When a search stops early: a wall-clock budget (``search.timeout``) and patience (``search.patience``).

Plain logic, no engines: the evaluator asks :meth:`Budget.past_deadline` after every epoch (the trial running
at the deadline is stopped) and every strategy asks :meth:`Budget.exhausted` before it starts a trial.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from hpsearch.results import TrialResult


@dataclass
class Budget:
    """``timeout``: seconds of searching from :meth:`start`; ``patience``: finished trials in a row that do not
    improve the best score by more than ``min_delta`` (the best of earlier runs counts: a resumed study goes on
    from it). ``since``: when the same command's search began in an earlier process (this one is the fresh process
    started after ``execution.trials_per_process`` trials): the clock goes on from there."""

    timeout: float | None = None
    patience: int | None = None
    min_delta: float = 0.0
    since: float | None = None
    started: float = field(default_factory=time.time)
    best: float = -math.inf
    stale: int = 0

    @property
    def deadline(self) -> float | None:
        """The wall-clock time (``time.time()``) at which the search stops; None without a timeout."""
        return None if self.timeout is None else self.started + self.timeout

    def start(self, earlier: list[TrialResult] = ()) -> None:
        """Start the clock now (or at ``since``); ``earlier``: the study's trials from earlier runs (patience goes on
        from their best)."""
        self.started, self.stale = time.time() if self.since is None else self.since, 0
        self.best = max((t.score for t in earlier if t.state == "finished" and math.isfinite(t.score)),
                        default=-math.inf)

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def record(self, result: TrialResult) -> None:
        """Count a trial that ended: only finished trials count towards patience."""
        if result.state != "finished" or not math.isfinite(result.score):
            return
        if result.score > self.best + self.min_delta:
            self.best, self.stale = result.score, 0
        else:
            self.stale += 1

    def exhausted(self) -> str | None:
        """Why the search must stop now (for the summary and the study run's tag), or None."""
        if self.past_deadline():
            return f"search.timeout: {self.timeout:g} s of searching"
        if self.patience is not None and self.stale >= self.patience:
            return (f"search.patience: {self.stale} finished trials in a row without improving the best score by "
                    f"more than {self.min_delta:g}")
        return None


STOPPED_AT_DEADLINE = "stopped at the search.timeout deadline"
