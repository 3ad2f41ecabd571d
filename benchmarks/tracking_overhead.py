"""Benchmark 2, tracking overhead: the same study with full MLflow tracking to a real server vs tracking off.

Tracking on: :func:`hpsearch.run.study.run_study` recording into an ``mlflow server`` subprocess (SQLite backend,
served artifacts, free loopback port): params, per-epoch curves, every trial's model, the refit best model and its
registration (what the target names: curves, params, models), with ``tracking.report: false``; and as shipped, with
the report's plots too. The server runs as docker-compose.yml runs it (gunicorn's threaded workers, no job runner).
Tracking off: the same study with ``tracking.enabled: false``. Same candidates (random search, same seed), holdout
scoring, after one warm-up study. Six rounds of the three runs, one in each of their orders, so that every kind runs
in every position and after every other kind, and the machine's drift (identical untracked runs here differ by up
to 14 %) falls on every side; each figure is the median of the rounds' ratios. Target: <= 5 % extra wall time.
Also printed: the server's CPU time per tracked study. On a 2-core machine that CPU is taken from the training (as
is the upload thread's): about half of the extra wall time, measured inside the trials; the rest is the study run's
opening and the refit model's upload and registration. And the first tracked study's one-time extra (round 0's over
the other rounds'), which every ``hpsearch run`` process pays once; in the medians it is one round of six.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from pathlib import Path

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Figure, as_study, chapter_raw, check, main_for, mlflow_server, run_untracked, scratch

NAME = "tracking_overhead"
TRIALS = {True: 3, False: 6}  # per study: --quick, full


def _raw(data: Path, workdir: Path, name: str, quick: bool, uri: str | None = None, trials: int | None = None,
         report: bool = True) -> dict:
    trials = trials or TRIALS[quick]
    overrides = [f"name={name}", "search.strategy=random", "search.cv=null",
                 f"search.n_trials={trials}", f"training.epochs={10 if quick else 20}"]
    if quick:
        overrides.append("data.max_rows=3000")
    if uri:
        overrides += [f"tracking.uri={uri}", f"tracking.report={str(report).lower()}"]
    return chapter_raw(data, workdir, overrides)


KINDS = ("off", "on", "on+report")  # tracking off; curves, params and models; all that and the report (the default)
ORDERS = list(itertools.permutations(KINDS))  # a round each (--quick: the first)


def run(quick: bool, data: Path) -> list[Figure]:
    from hpsearch.run.study import run_study

    rounds = 1 if quick else len(ORDERS)
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    server_cpu: list[float] = []  # seconds per tracked study without the report
    with scratch(NAME) as workdir, mlflow_server(workdir) as server:
        warm, _ = as_study(_raw(data, workdir, "bench-warmup", quick=True, trials=1))
        run_untracked(warm, "")
        for round_, order in enumerate(ORDERS[:rounds]):
            for kind in order:
                tracked = kind != "off"
                study, text = as_study(_raw(data, workdir, f"bench-{kind.replace('+', '-')}-{round_}", quick,
                                            uri=server.url if tracked else None, report=kind == "on+report"))
                cpu, started = server.cpu_seconds(), time.perf_counter()
                run_study(study, text) if tracked else run_untracked(study, text)
                times[kind].append(time.perf_counter() - started)
                if kind == "on":
                    server_cpu.append(server.cpu_seconds() - cpu)
            print(f"[{NAME}] round {round_}: " + ", ".join(f"{k} {times[k][-1]:.1f} s" for k in order), flush=True)
    off = times["off"]
    extras = {kind: [100 * (a / b - 1) for a, b in zip(times[kind], off)] for kind in KINDS[1:]}
    extra, shipped = statistics.median(extras["on"]), statistics.median(extras["on+report"])
    # round 0's is the process' first
    once = times["on"][0] - statistics.median(times["on"][1:]) if rounds > 1 else math.nan
    trials = TRIALS[quick]
    return [
        Figure(NAME, "tracking off (tracking.enabled: false) wall time", statistics.median(off), "s",
               note=f"median of {rounds}"),
        Figure(NAME, "tracking on (mlflow server) wall time", statistics.median(times["on"]), "s",
               note="curves, params, models, registry (tracking.report: false)"),
        Figure(NAME, "extra wall time with tracking", extra, "%", "<= 5 %", check(extra, 5, True),
               note="curves, params, models: rounds " + ", ".join(f"{e:+.1f} %" for e in extras["on"])),
        Figure(NAME, "mlflow server CPU time per tracked study", statistics.median(server_cpu), "s",
               note=f"{1000 * statistics.median(server_cpu) / (trials + 1):.0f} ms per run "
                    f"({trials} trials + study run); "
                    "taken from the training on this machine"),
        Figure(NAME, "the first tracked study in a process: extra wall time, once", once, "s",
               note="round 0's tracked run over the others': what each `hpsearch run` process pays once "
                    "(MLflow's first model save checks its requirements); one of the rounds in the medians"),
        Figure(NAME, "tracking and the report (the default) wall time", statistics.median(times["on+report"]), "s",
               note="the report's PNGs drawn in a child process during the refit"),
        Figure(NAME, "extra wall time with tracking and the report", shipped, "%", "<= 5 %", check(shipped, 5, True),
               note="as shipped: rounds " + ", ".join(f"{e:+.1f} %" for e in extras["on+report"])),
    ]


if __name__ == "__main__":
    main_for(NAME, run, __doc__.splitlines()[0])
