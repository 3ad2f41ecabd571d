"""Benchmark 3, per-trial overhead: the share of a study's search time spent outside training.

The study: the chapter's California data (the whole training split), its space, 30-epoch trials, holdout, random
search (12 trials; 4 of 5 epochs with ``--quick``), on the backend ``auto`` picks. The same candidates are fitted
two ways in one fresh child process (Keras fixes its backend per process):

- **the fitter loop**: hpsearch's own :class:`~hpsearch.evaluation.fitting.StudyFitter` called candidate by
  candidate (the same engine, feed, seeds and garbage-collection policy as the study's trials), each model
  scored on the validation split, nothing else;
- **the study**: :func:`hpsearch.run.study.run_study` as shipped (local MLflow: params, curves, a model per trial), and
  once with tracking off; its search time runs from the search start to the last trial's end (the final model and
  the test excluded).

A warm-up pass of the loop over every candidate first fills JAX's compilation cache for both sides; then two
rounds of loop, study, study with tracking off. Overhead = 1 - loop time / study search time, the median of the
rounds. Target: <= 10 % as shipped.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Clock, Figure, as_study, chapter_raw, check, child_json, main_for, run_untracked, scratch

NAME = "trial_overhead"
ROUNDS = 2


def fitter_loop(plan: Any, candidates: list[dict[str, Any]]) -> float:
    """Seconds to fit and score ``candidates`` with the study's own fitter, as its trials are seeded."""
    from sklearn.metrics import get_scorer

    data, seed = plan.data, plan.study.seed
    scorer = get_scorer(plan.scoring)
    started = time.perf_counter()
    for number, params in enumerate(candidates):
        model = plan.fitter(params, data.X_train, data.y_train, (data.X_valid, data.y_valid), seed + 7919 * number,
                            lambda epoch, logs: False)
        scorer(model, data.X_valid, data.y_valid)
    return time.perf_counter() - started


def _child(data: Path, workdir: Path, n_trials: int, epochs: int) -> None:
    """Measure here; print {"backend", "loop", "tracked", "untracked"} (seconds per round) as the last line."""
    from hpsearch.run.plan import plan_study
    from hpsearch.run.study import run_study

    def raw(name: str) -> dict[str, Any]:
        return chapter_raw(data, workdir, [f"name={name}", "search.strategy=random", "search.cv=null",
                                           f"search.n_trials={n_trials}", f"training.epochs={epochs}"])

    study, text = as_study(raw("bench-overhead"))
    plan = plan_study(study)
    candidates = list(plan.strategy.space.sample(n_trials, study.seed))
    fitter_loop(plan, candidates)  # warm-up
    times: dict[str, list[float]] = {"loop": [], "tracked": [], "untracked": []}
    for round_ in range(ROUNDS):
        times["loop"].append(fitter_loop(plan, candidates))
        tracked, untracked = Clock(), Clock()
        study, text = as_study(raw(f"bench-overhead-{round_}"))
        run_study(study, text, tracked)
        run_untracked(*as_study(raw(f"bench-overhead-off-{round_}")), untracked)
        times["tracked"].append(tracked.ends[-1] - tracked.started)
        times["untracked"].append(untracked.ends[-1] - untracked.started)
    print(json.dumps({"backend": plan.backend.name, **times}))


def run(quick: bool, data: Path) -> list[Figure]:
    n_trials, epochs = (4, 5) if quick else (12, 30)
    with scratch(NAME) as workdir:
        measured = child_json(__file__, [str(data), str(workdir), str(n_trials), str(epochs)], workdir)
    loop = measured["loop"]

    def share(side: str) -> float:
        return 100 * statistics.median(1 - a / b for a, b in zip(loop, measured[side]))

    what = f"{n_trials} trials x {epochs} epochs, backend {measured['backend']}"
    spread = lambda side: f"{min(measured[side]):.1f}-{max(measured[side]):.1f} s"  # noqa: E731
    return [
        Figure(NAME, "fitter loop: seconds", statistics.median(loop), "s", note=f"{what}; range {spread('loop')}"),
        Figure(NAME, "study search time (as shipped)", statistics.median(measured["tracked"]), "s",
               note=f"range {spread('tracked')}"),
        Figure(NAME, "share outside training (as shipped)", share("tracked"), "%", "<= 10 %",
               check(share("tracked"), 10, True), note=f"median of {ROUNDS} rounds"),
        Figure(NAME, "share outside training (tracking off)", share("untracked"), "%",
               note=f"search time {statistics.median(measured['untracked']):.1f} s"),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        main_for(NAME, run, __doc__.splitlines()[0])
