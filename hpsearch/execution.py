"""Where a random/grid search's (candidate, fold) fits run: local processes or a Dask cluster, via joblib.

The only module that imports dask. Tracking stays in the process that runs the study: workers only
fit and score, and send back each fold's score, curves and (first fold) model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from joblib import Parallel, delayed, parallel_config

from hpsearch.config import ExecutionConfig
from hpsearch.errors import ConfigError, TrackingError


class Executor(Protocol):
    """Runs ``fn`` over ``tasks`` elsewhere and yields the results as they finish (in any order)."""

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]: ...


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity where the OS has one, else all of the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def share_of_cores(processes: int) -> int:
    """TensorFlow threads for each of ``processes`` processes training at once on this machine."""
    return max(1, len(usable_cpus()) // processes)


def cpu_groups(processes: int) -> list[list[int]] | None:
    """The usable CPUs in ``processes`` disjoint groups of equal size, one per worker process; None where the OS
    cannot pin a process to CPUs or there are fewer CPUs than processes.

    Two unpinned TensorFlow processes on two cores trained about 1.5x as fast as one; pinned, one to each core,
    about 1.9x: a small model's fit hands work back and forth between Python's thread and TensorFlow's, and
    unpinned, each hand-over can wait for the core the other process is using.
    """
    cpus = usable_cpus()
    size = len(cpus) // processes
    if not hasattr(os, "sched_setaffinity") or size == 0:
        return None
    return [cpus[k * size:(k + 1) * size] for k in range(processes)]


def pin_to_cpus(cpus: list[int]) -> None:
    """Run this process (and the threads and processes it starts from now on) on ``cpus`` only."""
    try:
        os.sched_setaffinity(0, cpus)
    except (AttributeError, OSError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "this system cannot pin processes"
        raise ConfigError(f"cannot run on CPUs {','.join(map(str, cpus))} ({why}); usable here: "
                          f"{','.join(map(str, usable_cpus()))}", field="--cpus") from None


def _with_threads(fn: Callable[[Any], Any], task: Any, threads: int | None) -> Any:
    """Run ``fn(task)`` in a worker whose TensorFlow uses at most ``threads`` threads."""
    from hpsearch.models.backend import limit_threads

    limit_threads(threads)
    return fn(task)


class JoblibExecutor:
    """joblib's loky processes on this machine, or its Dask backend on a ``distributed`` cluster.

    A context manager: entering connects to the cluster (a clear error before any training).
    """

    def __init__(self, config: ExecutionConfig) -> None:
        self.config = config
        self._client: Any = None

    def __enter__(self) -> JoblibExecutor:
        if self.config.backend == "dask":
            self._client = _dask_client(self.config)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _threads(self) -> int | None:
        if self.config.threads is not None or self.config.backend == "dask" and self.config.address:
            return self.config.threads  # a remote cluster's cores are not ours to count
        return share_of_cores(self.config.n_jobs)

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        calls = [delayed(_with_threads)(fn, task, self._threads()) for task in tasks]
        if not calls:
            return
        if self.config.backend == "local":
            with parallel_config(backend="loky", n_jobs=self.config.n_jobs):
                yield from Parallel(return_as="generator_unordered")(calls)
            return
        if self._client is None:
            raise RuntimeError("a Dask JoblibExecutor must be entered (with ...) before use")
        with parallel_config(backend="dask"):
            yield from Parallel(n_jobs=-1, return_as="generator_unordered")(calls)


def _dask_client(config: ExecutionConfig) -> Any:
    """A client of the cluster at ``execution.address``, or of a local cluster of ``n_jobs`` processes."""
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("execution.backend: dask needs the distributed package: pip install 'hpsearch[dask]'",
                          field="execution.backend") from None
    if config.address is None:  # the client owns (and closes) this cluster
        return Client(n_workers=config.n_jobs, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        return Client(config.address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise TrackingError(f"cannot reach the Dask scheduler at execution.address {config.address}: {exc}") from None


def make_executor(config: ExecutionConfig) -> JoblibExecutor | None:
    """The executor ``execution`` asks for (enter it before use); None: everything runs in this process."""
    if config.backend == "local" and config.n_jobs == 1:
        return None
    return JoblibExecutor(config)
