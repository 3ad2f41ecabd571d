"""Where a random/grid search's (candidate, fold) fits run: local processes or a Dask cluster, via joblib.

The only module that imports dask. Tracking stays in the process that runs the study: workers only
fit and score, and send back each fold's score, curves and (first fold) model."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from joblib import Parallel, delayed, effective_n_jobs, parallel_config
from joblib.parallel import get_active_backend

from hpsearch.config.schema import ExecutionConfig
from hpsearch.errors import ConfigError, TrackingError
from hpsearch.evaluation.cpus import share_of_cores


class Executor(Protocol):
    """Runs ``fn`` over ``tasks`` elsewhere and yields the results as they finish (in any order)."""

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]: ...


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


def ambient_execution(n_jobs: int | None) -> ExecutionConfig:
    """``n_jobs`` local processes (-1: every core), or, for None, what the enclosing ``joblib.parallel_config`` /
    ``parallel_backend`` asks for: its Dask cluster (``parallel_backend("dask")`` inside a ``distributed.Client``),
    else its ``n_jobs``; one process where there is none."""
    backend, context_jobs = get_active_backend()
    if n_jobs is None and type(backend).__name__ == "DaskDistributedBackend":
        from distributed import get_client

        return ExecutionConfig(backend="dask", address=get_client().scheduler.address)
    wanted = n_jobs if n_jobs is not None else context_jobs or 1
    return ExecutionConfig(n_jobs=effective_n_jobs(wanted))


def make_executor(config: ExecutionConfig) -> JoblibExecutor | None:
    """The executor ``execution`` asks for (enter it before use); None: everything runs in this process."""
    if config.backend == "local" and config.n_jobs == 1:
        return None
    return JoblibExecutor(config)
