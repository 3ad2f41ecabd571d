"""Benchmark 4, memory: resident memory after 100 tiny trials minus after 10.

The tiny study of benchmark 3 (1,000 rows, small MLPs; 2 epochs here) as an Optuna study (random sampler, no pruning,
local MLflow store, a model logged per trial), measured two ways:

- **default** (the target figures): what a study file that says nothing more gets (the storage ``./optuna.db``,
  no ``execution.trials_per_process``): :func:`hpsearch.run.study.run_study` in a fresh child process in a folder of
  its own, once on each Keras backend (``auto`` picks TensorFlow for these short fits); a TrialObserver reads
  psutil's RSS when trial 10 and trial N end.
- **recycled**: ``hpsearch run`` with ``execution.trials_per_process`` (30; 12 with ``--quick``) and a SQLite
  storage as a subprocess, which starts itself afresh (``exec``, same pid) after every 30 trials; RSS of its
  process tree sampled every 0.2 s, read when the storage first holds 10 and N ended trials, and its peak in
  between. The study has N + 1 trials, so that the search is still on (the refit not begun) at trial N.

N = 100 (25 with ``--quick``, the growth then extrapolated to 90 trials). Target: <= 100 MB in the default
configuration.
"""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Clock, Figure, as_study, check, child_json, main_for, scratch, tiny_raw, write_study

NAME = "memory"
# 2 epochs, not 5: what leaks is per model built, not per epoch, and 200 trials fit in the suite's time
OPTUNA = ["search.strategy=optuna", "search.sampler=random", "search.pruner=none", "training.epochs=2"]
BACKENDS = ("tensorflow", "jax")


def one_process(data: Path, workdir: Path, n_trials: int, backend: str) -> tuple[dict[int, float], float]:
    """({10: MB, n_trials: MB}, wall seconds) of a fresh process running the study in-process on ``backend``."""
    folder = workdir / backend
    folder.mkdir()
    measured = child_json(__file__, [str(data), str(folder), str(n_trials), backend], folder)
    return {int(k): v for k, v in measured["rss"].items()}, measured["wall"]


def _child(data: Path, workdir: Path, n_trials: int, backend: str) -> None:
    """Run the study here on ``backend``; print {"rss": {10: MB, n: MB}, "wall": s} as the last line."""
    import psutil

    from hpsearch.run.study import run_study

    process, rss = psutil.Process(), {}

    def sample(ended: int) -> None:
        if ended in (10, n_trials):
            rss[ended] = process.memory_info().rss / 2**20

    started = time.perf_counter()
    raw = tiny_raw(data, workdir, f"bench-memory-{backend}", [
        *OPTUNA, f"search.n_trials={n_trials}", f"search.storage=sqlite:///{workdir / 'optuna.db'}",
        f"training.backend={backend}"])
    run_study(*as_study(raw), Clock(sample))
    print(json.dumps({"rss": rss, "wall": time.perf_counter() - started}))


def _ended(storage: Path) -> int:
    try:
        with sqlite3.connect(storage) as db:
            return db.execute("select count(*) from trials where state in ('COMPLETE', 'PRUNED', 'FAIL')").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _tree_rss(process: psutil.Process) -> float:
    import psutil

    try:
        tree = [process, *process.children(recursive=True)]
        return sum(p.memory_info().rss for p in tree) / 2**20
    except psutil.NoSuchProcess:  # the command (or a child) ended between poll() and this sample
        return float("nan")


def recycled(data: Path, workdir: Path, n_trials: int, per_process: int) -> tuple[dict[int, float], float, float]:
    """({10: MB, n_trials: MB}, peak MB from trial 10 to ``n_trials``, wall seconds) of ``hpsearch run`` with
    ``execution.trials_per_process``."""
    import psutil

    storage = workdir / "recycled.db"
    raw = tiny_raw(data, workdir, "bench-memory-recycled", [
        *OPTUNA, f"search.n_trials={n_trials + 1}", f"search.storage=sqlite:///{storage}",
        f"execution.trials_per_process={per_process}"])
    as_study(raw)  # validate before starting processes
    path = write_study(raw, workdir, "recycled.yaml")
    started = time.perf_counter()
    command = subprocess.Popen([sys.executable, "-m", "hpsearch", "run", str(path)], cwd=workdir,
                               stdout=subprocess.DEVNULL)
    process, rss, peak = psutil.Process(command.pid), {}, 0.0
    while command.poll() is None:
        ended, now = _ended(storage), _tree_rss(process)
        for mark in (10, n_trials):
            if ended >= mark and mark not in rss and not math.isnan(now):
                rss[mark] = now
        if 10 <= ended <= n_trials and not math.isnan(now):
            peak = max(peak, now)
        time.sleep(0.2)
    if command.returncode != 0:
        raise RuntimeError(f"hpsearch run exited with {command.returncode}")
    return rss, peak, time.perf_counter() - started


def run(quick: bool, data: Path) -> list[Figure]:
    n_trials, per_process = (25, 12) if quick else (100, 30)
    per_90 = 90 / (n_trials - 10)
    note = "" if n_trials == 100 else f"extrapolated linearly from {n_trials - 10} trials"
    figures = []
    with scratch(NAME) as workdir:
        for backend in BACKENDS:
            inside, inside_wall = one_process(data, workdir, n_trials, backend)
            growth = (inside[n_trials] - inside[10]) * per_90
            figures += [
                Figure(NAME, f"default, {backend}: RSS after trial 10", inside[10], "MB"),
                Figure(NAME, f"default, {backend}: RSS growth from trial 10 to 100", growth, "MB", "<= 100 MB",
                       check(growth, 100, True), note=f"{n_trials} trials in {inside_wall:.0f} s; {note}".rstrip("; ")),
            ]
        tree, peak, wall = recycled(data, workdir, n_trials, per_process)
    return figures + [
        Figure(NAME, "recycled: RSS after trial 10", tree[10], "MB",
               note=f"execution.trials_per_process={per_process}; {wall:.0f} s"),
        Figure(NAME, f"recycled: RSS after trial {n_trials} minus after trial 10", tree[n_trials] - tree[10], "MB"),
        Figure(NAME, f"recycled: peak RSS from trial 10 to {n_trials} minus after trial 10", peak - tree[10], "MB"),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        main_for(NAME, run, __doc__.splitlines()[0])
