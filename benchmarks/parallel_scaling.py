"""Benchmark 5, parallel scaling: ``hpsearch run --workers 2`` vs ``--workers 1`` on 2 cores, trials per hour.

An Optuna study (random sampler, no pruning, holdout; the whole split and 30 epochs per trial, 3,000 rows and 10
epochs with ``--quick``) in a fresh SQLite storage
(or ``--postgres``: a fresh database on 127.0.0.1:5432, user postgres, dropped afterwards), run by the CLI as a
subprocess. Trials per hour come from the storage's timestamps: trials / (last completion - first start), so
process start-up, the refit and the report are excluded; the whole command's wall time is reported too.
Target: >= 1.7x.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Figure, as_study, chapter_raw, check, main_for, scratch, write_study

NAME = "parallel_scaling"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"


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


def one(data: Path, workdir: Path, workers: int, n_trials: int, postgres: bool, quick: bool) -> tuple[float, float]:
    """(trials per hour, whole-command seconds) of ``hpsearch run --workers N``."""
    import optuna

    storage, database = _storage(workdir, workers, postgres)
    try:
        raw = chapter_raw(data, workdir, [
            f"name=bench-workers-{workers}", f"data.max_rows={3000 if quick else 'null'}", "search.strategy=optuna",
            "search.sampler=random", "search.pruner=none", "search.cv=null", f"search.n_trials={n_trials}",
            f"training.epochs={10 if quick else 30}", f"search.storage={storage}"])
        as_study(raw)  # validate before starting processes
        path = write_study(raw, workdir, f"study-{workers}.yaml")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "hpsearch", "run", str(path), "--workers", str(workers)], check=True,
                       cwd=workdir, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        trials = [t for t in optuna.load_study(study_name=raw["name"], storage=storage).trials
                  if t.datetime_complete is not None]
        span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
        return 3600 * len(trials) / span, wall
    finally:
        _drop(database)


def run(quick: bool, data: Path, postgres: bool = False) -> list[Figure]:
    n_trials = 6 if quick else 12
    with scratch(NAME) as workdir:
        serial, serial_wall = one(data, workdir, 1, n_trials, postgres, quick)
        print(f"[{NAME}] 1 worker: {serial:.0f} trials/h ({serial_wall:.0f} s)", flush=True)
        parallel, parallel_wall = one(data, workdir, 2, n_trials, postgres, quick)
        print(f"[{NAME}] 2 workers: {parallel:.0f} trials/h ({parallel_wall:.0f} s)", flush=True)
    ratio = parallel / serial
    storage = "PostgreSQL" if postgres else "SQLite"
    return [
        Figure(NAME, "1 worker trials/hour", serial, "/h",
               note=f"{n_trials} trials, {storage}; command {serial_wall:.0f} s"),
        Figure(NAME, "2 workers trials/hour", parallel, "/h", note=f"command {parallel_wall:.0f} s"),
        Figure(NAME, "2 workers / 1 worker", ratio, "x", ">= 1.7x", check(ratio, 1.7, False)),
        Figure(NAME, "2 workers / 1 worker, whole command", serial_wall / parallel_wall, "x",
               note="start-up, refit and report included"),
    ]


if __name__ == "__main__":
    main_for(NAME, run, __doc__.splitlines()[0])
