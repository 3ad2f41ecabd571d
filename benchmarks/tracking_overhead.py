"""Benchmark 2, tracking overhead: the same study with full MLflow tracking to a real server vs tracking off.

Tracking on: :func:`hpsearch.runner.run_study` recording into an ``mlflow server`` subprocess (SQLite backend,
served artifacts, free loopback port): params, per-epoch curves, every trial's model, the refit best model, its
registration and the report plots. Tracking off: the same study with
``tracking.enabled: false``. Same candidates (random search, same seed), holdout scoring, after one warm-up study.
Three rounds of an off and an on run each, in alternating order (off-on, on-off, off-on) so that the machine's
drift (identical untracked runs here differ by up to 14 %) falls on both sides; the figure is the median of the
rounds' ratios. Target: <= 5 % extra wall time.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Figure, as_study, chapter_raw, check, main_for, mlflow_server, run_untracked, scratch

NAME = "tracking_overhead"


def _raw(data: Path, workdir: Path, name: str, quick: bool, uri: str | None = None, trials: int | None = None) -> dict:
    trials = trials or (3 if quick else 6)
    overrides = [f"name={name}", "search.strategy=random", "search.cv=null",
                 f"search.n_trials={trials}", f"training.epochs={10 if quick else 20}"]
    if quick:
        overrides.append("data.max_rows=3000")
    if uri:
        overrides.append(f"tracking.uri={uri}")
    return chapter_raw(data, workdir, overrides)


def run(quick: bool, data: Path) -> list[Figure]:
    from hpsearch.runner import run_study

    rounds = 1 if quick else 3
    on, off = [], []
    with scratch(NAME) as workdir, mlflow_server(workdir) as url:
        warm, _ = as_study(_raw(data, workdir, "bench-warmup", quick=True, trials=1))
        run_untracked(warm, "")
        for round_ in range(rounds):
            for tracked in (False, True) if round_ % 2 == 0 else (True, False):
                study, text = as_study(_raw(data, workdir, f"bench-{'on' if tracked else 'off'}-{round_}", quick,
                                            uri=url if tracked else None))
                started = time.perf_counter()
                run_study(study, text) if tracked else run_untracked(study, text)
                (on if tracked else off).append(time.perf_counter() - started)
            print(f"[{NAME}] round {round_}: off {off[-1]:.1f} s, on {on[-1]:.1f} s", flush=True)
    extras = [100 * (a / b - 1) for a, b in zip(on, off)]
    extra = statistics.median(extras)
    return [
        Figure(NAME, "tracking off (tracking.enabled: false) wall time", statistics.median(off), "s",
               note=f"median of {rounds}"),
        Figure(NAME, "tracking on (mlflow server) wall time", statistics.median(on), "s",
               note="curves, params, models, registry, report"),
        Figure(NAME, "extra wall time with tracking", extra, "%", "<= 5 %", check(extra, 5, True),
               note="rounds: " + ", ".join(f"{e:+.1f} %" for e in extras)),
    ]


if __name__ == "__main__":
    main_for(NAME, run, __doc__.splitlines()[0])
