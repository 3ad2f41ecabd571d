"""The processes of one study: worker processes on a shared study, each on its own CPUs, and a process that
starts itself afresh (``execution.trials_per_process``) to hand back the memory Keras keeps between models.

A launcher's job, in Hydra's terms: the command line decides when; this module knows how.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

from hpsearch.config.schema import StudyConfig
from hpsearch.errors import ConfigError, Terminated
from hpsearch.evaluation.cpus import cpu_groups, share_of_cores

_SEARCH_STARTED = "HPSEARCH_SEARCH_STARTED"  # handed from a process to the fresh one that carries its search on


def check_shared(study: StudyConfig) -> None:
    """Workers share an Optuna storage: a study without one cannot have workers."""
    if study.search.strategy != "optuna" or study.search.storage is None:
        raise ConfigError("workers share an Optuna storage: set search.strategy: optuna and search.storage "
                          "(sqlite:///optuna.db on one machine, postgresql://... across machines)",
                          field="search.strategy")


def handed_search_start() -> float | None:
    """When the search began in the process that handed it on to this one (``time.time()``); None: it begins here."""
    handed = os.environ.pop(_SEARCH_STARTED, "")
    try:
        return float(handed) if handed else None
    except ValueError:
        return None


def start_workers(study_path: Path, overrides: list[str], count: int) -> list[subprocess.Popen]:
    """``count`` worker processes on the same study, each pinned to its own share of the CPUs where it can be."""
    command = [sys.executable, "-m", "hpsearch", "worker", str(study_path)]
    for override in overrides:
        command += ["--set", override]
    groups = cpu_groups(count)
    places = [["--cpus", ",".join(map(str, cpus))] for cpus in groups] if groups else \
        [["--threads", str(share_of_cores(count))]] * count
    return [subprocess.Popen(command + place, stdout=subprocess.DEVNULL) for place in places]


def wait_for_workers(workers: list[subprocess.Popen], grace: float = 120.0) -> list[int]:
    """The workers' exit codes. SIGTERM to this process (:class:`~hpsearch.errors.Terminated`) is passed on to
    every worker, which ends its trial as terminated; Ctrl-C reached them already (the terminal's process group).
    Either way they are waited for (``grace`` seconds, then killed) before the interruption goes on."""
    try:
        return [w.wait() for w in workers]
    except KeyboardInterrupt as exc:
        for worker in workers:
            if isinstance(exc, Terminated) and worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(grace)
            except subprocess.TimeoutExpired:
                worker.kill()
        raise


def start_afresh(argv: list[str], search_started: float | None) -> NoReturn:
    """Replace this process (same pid) by a fresh one running ``hpsearch argv``: the study goes on from its
    storage (its ``search.timeout`` from ``search_started``), and the memory Keras kept from earlier trials is
    returned."""
    if search_started is not None:
        os.environ[_SEARCH_STARTED] = repr(search_started)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "hpsearch", *argv])
