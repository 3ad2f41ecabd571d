"""Benchmark 5, parallel scaling: 2 workers vs 1 on one shared study, trials per hour, each worker on one core.

An Optuna study (random sampler, no pruning, holdout; the whole split and 30 epochs per trial, 3,000 rows and 10
epochs with ``--quick``) in a fresh SQLite storage
(or ``--postgres``: a fresh database on 127.0.0.1:5432, user postgres, dropped afterwards), run by the CLI as a
subprocess. **Both sides are pinned alike**: one worker alone (``hpsearch worker --cpus 0``) against ``hpsearch run
--workers 2``, which pins each of its two workers to a core of its own; both see the same candidates (the same seed,
the same sampler). Trials per hour come from the storage's timestamps: trials / (last completion - first start),
so process start-up, the refit and the report are excluded; the rate while both workers are busy is reported too
(each worker's trials over its own span: the study's tail, one worker finishing the last trial alone, left out).
Every trial does the same work: the chapter's architecture fixed (2 hidden layers of 30), only the learning rate
searched, no early stopping. Target: >= 1.8x.

Two more figures. **The ceiling**, with the same feed: hpsearch's own fitter (the study's first candidates, 10
epochs, no study around them) in one process pinned to one core, and in two at once pinned to a core each: what
these cores allow. **What a user sees**: plain ``hpsearch run`` (one process, every core, not pinned) against
``--workers 2``. Not with ``--quick`` (the ceiling's six start-ups cost ~40 s).
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Figure, as_study, chapter_raw, check, main_for, scratch, write_study

from hpsearch.evaluation.cpus import cpu_groups, usable_cpus

NAME = "parallel_scaling"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
N_FITS = 4  # bare fits per process for the ceiling


def _storage(workdir: Path, workers: int, postgres: bool) -> tuple[str, str | None]:
    """(storage URL, database to drop afterwards)."""
    if not postgres:
        return f"sqlite:///{workdir / f'optuna-{workers}.db'}", None
    import psycopg

    name = f"hpsearch_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{POSTGRES}/test", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", name


def _drop(name: str | None) -> None:
    if name is None:
        return
    import psycopg

    with psycopg.connect(f"{POSTGRES}/test", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


SAME_WORK = ["search.space={learning_rate: {float: [3.0e-4, 3.0e-2], log: true}}",
             "model.params={optimizer: sgd, loss: mse, n_hidden: 2, n_neurons: 30}", "training.early_stopping=null"]


def _per_hour(trials: list[Any]) -> float:
    """Trials per hour over the span of ``trials``: first start to last completion."""
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return 3600 * len(trials) / span


def _busy_rate(trials: list[Any], tracking_uri: str, experiment: str) -> float:
    """Trials per hour while every worker is busy: each worker's trials over its own span, summed.

    The study's span also holds its tail: after the last trial is claimed, one worker finishes it while the other
    has nothing left (up to one trial's time, ~8 % of a 12-trial study; nothing in a long one). Which worker ran
    which trial comes from the trial runs' ``hpsearch.process`` tag in MLflow.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              "tags.`hpsearch.role` = 'trial'")
    process = {int(r.data.tags["hpsearch.trial"]): r.data.tags["hpsearch.process"] for r in runs}
    return sum(_per_hour([t for t in trials if process.get(t.number) == worker]) for worker in set(process.values()))


def one(data: Path, workdir: Path, workers: int, n_trials: int, postgres: bool, quick: bool,
        pinned: bool = True) -> tuple[float, float, float]:
    """(trials per hour over the study's span, trials per hour while all workers are busy, whole-command seconds)
    of ``hpsearch run --workers N``; one worker: ``hpsearch worker --cpus 0`` (``pinned``) or plain ``hpsearch
    run``."""
    import optuna

    storage, database = _storage(workdir, workers, postgres)
    try:
        raw = chapter_raw(data, workdir, [
            f"name=bench-workers-{workers}{'' if pinned else '-unpinned'}",
            f"data.max_rows={3000 if quick else 'null'}", "search.strategy=optuna",
            "search.sampler=random", "search.pruner=none", "search.cv=null", f"search.n_trials={n_trials}",
            f"training.epochs={10 if quick else 30}", f"search.storage={storage}", *SAME_WORK])
        as_study(raw)  # validate before starting processes
        path = write_study(raw, workdir, f"{raw['name']}.yaml")
        command = ["worker", str(path), "--cpus", str(usable_cpus()[0])] if workers == 1 and pinned else \
            ["run", str(path), "--workers", str(workers)]
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "hpsearch", *command], check=True, cwd=workdir,
                       stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        trials = [t for t in optuna.load_study(study_name=raw["name"], storage=storage).trials
                  if t.datetime_complete is not None]
        return _per_hour(trials), _busy_rate(trials, raw["tracking"]["uri"], raw["name"]), wall
    finally:
        _drop(database)


def _bare_process(raw: dict[str, Any], threads: int, cpus: list[int] | None, n_fits: int, barrier: Any,
                  out: Any) -> None:
    """One process of the ceiling: warm up, wait for the others, then time hpsearch's fitter (fits per second)."""
    from trial_overhead import fitter_loop

    from hpsearch.evaluation.cpus import pin_to_cpus
    from hpsearch.models.backend import limit_threads
    from hpsearch.run.plan import plan_study

    if cpus:
        pin_to_cpus(cpus)
    limit_threads(threads)  # before TensorFlow's first operation
    plan = plan_study(as_study(raw)[0])
    candidates = list(plan.strategy.space.sample(n_fits, plan.study.seed))
    fitter_loop(plan, candidates[:1])  # the first fit's costs (tracing, compiling), outside the timing
    barrier.wait()
    out.put(len(candidates) / fitter_loop(plan, candidates))


def fitter_ceiling(raw: dict[str, Any], n_fits: int) -> float:
    """Throughput of two processes over one (fits per second, summed), each process fitting the same candidates
    with hpsearch's own fitter, each pinned to a core of its own with one thread, as ``--workers 2`` pins them."""
    context = multiprocessing.get_context("spawn")
    rates = {}
    for processes in (1, 2):
        barrier, out = context.Barrier(processes), context.Queue()
        children = [context.Process(target=_bare_process, args=(raw, 1, cpus, n_fits, barrier, out))
                    for cpus in cpu_groups(2)[:processes]]
        for child in children:
            child.start()
        rates[processes] = sum(out.get(timeout=600) for _ in children)
        for child in children:
            child.join()
    return rates[2] / rates[1]


def run(quick: bool, data: Path, postgres: bool = False) -> list[Figure]:
    n_trials = 6 if quick else 12
    with scratch(NAME) as workdir:
        if not quick:
            bare = chapter_raw(data, workdir, ["search.strategy=random", "search.cv=null", "training.epochs=10",
                                               *SAME_WORK])
            ceiling = fitter_ceiling(bare, N_FITS)
            print(f"[{NAME}] hpsearch's fitter, 2 pinned processes / 1: {ceiling:.2f}x", flush=True)
            plain, _, plain_wall = one(data, workdir, 1, n_trials, postgres, quick, pinned=False)
            print(f"[{NAME}] plain hpsearch run: {plain:.0f} trials/h ({plain_wall:.0f} s)", flush=True)
        serial, _, serial_wall = one(data, workdir, 1, n_trials, postgres, quick)
        print(f"[{NAME}] 1 worker on one core: {serial:.0f} trials/h ({serial_wall:.0f} s)", flush=True)
        parallel, busy, parallel_wall = one(data, workdir, 2, n_trials, postgres, quick)
        print(f"[{NAME}] 2 workers: {parallel:.0f} trials/h, {busy:.0f} while both busy ({parallel_wall:.0f} s)",
              flush=True)
    ratio, busy_ratio = parallel / serial, busy / serial
    storage = "PostgreSQL" if postgres else "SQLite"
    more = [] if quick else [
        Figure(NAME, "ceiling: hpsearch's fitter, 2 processes / 1, pinned alike", ceiling, "x",
               note=f"{N_FITS} fits each, a core each, no study around them; what these cores allow"),
        Figure(NAME, "2 workers / 1 worker, as a share of the ceiling", ratio / ceiling, "x"),
        Figure(NAME, "2 workers / plain hpsearch run (every core, not pinned)", parallel / plain, "x",
               note=f"{plain:.0f} trials/h; what --workers 2 gives a user over the plain command"),
    ]
    return [
        Figure(NAME, "1 worker on one core: trials/hour", serial, "/h",
               note=f"{n_trials} trials, {storage}; command {serial_wall:.0f} s"),
        Figure(NAME, "2 workers (a core each): trials/hour", parallel, "/h", note=f"command {parallel_wall:.0f} s"),
        Figure(NAME, "2 workers / 1 worker, pinned alike", ratio, "x", ">= 1.8x", check(ratio, 1.8, False),
               note="over the study's span, its tail included"),
        Figure(NAME, "2 workers / 1 worker, while both are busy", busy_ratio, "x",
               note="each worker's trials over its own span: the steady state of a long study"),
        *more,
    ]


if __name__ == "__main__":
    main_for(NAME, run, __doc__.splitlines()[0])
