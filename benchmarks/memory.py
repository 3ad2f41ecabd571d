"""Benchmark 4, memory: resident memory after 100 tiny trials minus after 10, in one process.

The tiny study of benchmark 3 (1,000 rows, 5 epochs, small MLPs) runs through :func:`hpsearch.runner.run_study`
as shipped (local MLflow store, a model logged per trial); a TrialObserver reads psutil's RSS of this process when
trial 10 and trial N end (N = 100; 30 with ``--quick``, reported as growth per 90 trials). Target: <= 100 MB.
"""

from __future__ import annotations

from pathlib import Path

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Clock, Figure, as_study, check, main_for, scratch, tiny_raw

NAME = "memory"


def run(quick: bool, data: Path) -> list[Figure]:
    import psutil

    from hpsearch.runner import run_study

    n_trials = 25 if quick else 100
    process, rss = psutil.Process(), {}

    def sample(ended: int) -> None:
        if ended in (10, n_trials):
            rss[ended] = process.memory_info().rss / 2**20

    with scratch(NAME) as workdir:
        study, text = as_study(tiny_raw(data, workdir, "bench-memory", [f"search.n_trials={n_trials}"]))
        run_study(study, text, Clock(sample))
    growth = rss[n_trials] - rss[10]
    per_90 = growth * 90 / (n_trials - 10)
    return [
        Figure(NAME, "RSS after trial 10", rss[10], "MB"),
        Figure(NAME, f"RSS after trial {n_trials}", rss[n_trials], "MB"),
        Figure(NAME, "RSS growth from trial 10 to 100", per_90, "MB", "<= 100 MB", check(per_90, 100, True),
               note="" if n_trials == 100 else f"extrapolated linearly from {n_trials - 10} trials"),
    ]


if __name__ == "__main__":
    main_for(NAME, run, __doc__.splitlines()[0])
