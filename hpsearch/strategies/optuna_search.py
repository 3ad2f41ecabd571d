"""Optuna: ask/tell over the space, per-epoch pruning, resumable storage (the only optuna importer)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from hpsearch.config.schema import absolute_sqlite
from hpsearch.errors import ConfigError, InternalSignal, TrackingError, mask_credentials
from hpsearch.results import TrialResult
from hpsearch.strategies.base import Strategy
from hpsearch.strategies.coordination import Coordination
from hpsearch.strategies.evaluate import Evaluate

_STATES = {"finished": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}
_DONE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_INTERRUPTED = "hpsearch_interrupted"  # user attr of a trial that Ctrl-C or SIGTERM ended: a re-run redoes it
_SURPLUS = "hpsearch_surplus"  # user attr of a trial started after the study already held n_trials
_log = logging.getLogger(__name__)
_DB_RETRY_SECONDS = 300.0  # how long a storage call waits for its database to come back (a restart, a failover)
_RUN_WAIT = 60.0  # seconds a joining worker waits for the study's creator to open the MLflow study run


class _Surplus(InternalSignal):  # noqa: N818  (a signal inside run_search, never raised to the caller)
    """This worker's new trial came after the study already held n_trials: it is not run."""


def _interruption(exc: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt (Ctrl-C, or SIGTERM's :class:`Terminated`) being handled when ``exc`` was raised."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the database going away: a restart, a killed connection."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)) or (
                isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retried(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of the storage, tried again with backoff while its database is unreachable."""
    @functools.wraps(method)
    def call(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        deadline, delay, warned = time.monotonic() + _DB_RETRY_SECONDS, 0.5, False
        while True:
            try:
                value = method(self, *args, **kwargs)
            except Exception as exc:
                if not _connection_lost(exc) or time.monotonic() + delay > deadline:
                    raise
                if not warned:
                    _log.warning("hpsearch: search.storage %s does not answer (%s); retrying for up to %.0f s",
                                 mask_credentials(self.url), type(exc).__name__, _DB_RETRY_SECONDS)
                    warned = True
                time.sleep(delay)
                delay = min(2 * delay, 10.0)
                continue
            if warned:
                _log.warning("hpsearch: search.storage %s answers again", mask_credentials(self.url))
            return value
    return call


class RetryingStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage on a database server whose every call survives a restart of the server: connections are
    checked before use (``pool_pre_ping``) and a call that finds the database gone is tried again with backoff. A
    call is one transaction: one whose connection broke before its commit wrote nothing, and trying it again counts
    nothing twice (only a connection lost between the commit and its acknowledgement could)."""


for _name in {*(n for n in dir(optuna.storages.BaseStorage) if not n.startswith("_")), "record_heartbeat",
              "_get_stale_trial_ids", "get_heartbeat_interval", "get_failed_trial_callback"}:  # Optuna's contract
    setattr(RetryingStorage, _name, _retried(getattr(optuna.storages.RDBStorage, _name)))


class _Reporter:
    """Hands intermediate values (greater is better) to the trial and asks the pruner."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def should_prune(self, value: float, step: int) -> bool:
        self.trial.report(value, step)
        return self.trial.should_prune()


class OptunaStrategy(Strategy):
    """An Optuna study (TPE by default) in a storage, so that re-running the study resumes it."""

    name = "optuna"
    study: optuna.Study | None = None
    creator = False

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                    "cmaes": optuna.samplers.CmaEsSampler, "qmc": optuna.samplers.QMCSampler}
        return samplers[self.search.sampler](seed=seed)

    def _joiner_seed(self) -> int:
        """A seed for a process joining a stored study: with the study's own seed, a second worker (or a
        resumed run) would propose the very candidates the first one drew."""
        entropy = [self.seed, os.getpid(), time.time_ns()]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0])

    def _pruner(self) -> optuna.pruners.BasePruner:
        return {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
                "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
                "hyperband": optuna.pruners.HyperbandPruner}[self.search.pruner]()

    def _storage(self) -> optuna.storages.BaseStorage | None:
        """RDB storage with heartbeats: a killed worker's RUNNING trial becomes FAILED and is retried once."""
        if self.search.storage is None:
            return None
        failures = 0
        while True:  # workers started together race to create the tables of a new database: retry
            try:
                url = absolute_sqlite(self.search.storage)
                served = not url.startswith("sqlite")  # a SQLite file does not restart (and locked is not gone)
                return (RetryingStorage if served else optuna.storages.RDBStorage)(
                    url, engine_kwargs={"pool_pre_ping": True} if served else None,
                    heartbeat_interval=self.search.heartbeat,
                    grace_period=2 * self.search.heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
            except Exception:
                failures += 1
                if failures == 3:
                    raise
                time.sleep(1 + random.random())

    def prepare(self, setup: dict[str, Any]) -> None:
        """Open (or create) the study; refuse one of the same name created with another search space."""
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        try:
            storage = self._storage()
            try:  # whoever creates the study also creates its MLflow study run (see shared_run_id)
                self.study = optuna.create_study(study_name=self.study_name, storage=storage, direction="maximize",
                                                 sampler=self._sampler(self.seed), pruner=self._pruner())
                self.creator = True
            except optuna.exceptions.DuplicatedStudyError:
                self.study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=self._pruner())
                self.study.sampler = self._sampler(self._joiner_seed())
        except Exception as exc:  # SQLAlchemy/driver errors: the URL is the user's to fix
            raise TrackingError(f"cannot open search.storage {mask_credentials(str(self.search.storage))}: "
                                f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        space = self.space.describe()
        recorded = self.study.user_attrs.get("hpsearch_space")
        if recorded is None:
            self.study.set_user_attr("hpsearch_space", space)
        elif recorded != space:
            raise ConfigError(
                f"study {self.study_name!r} in {mask_credentials(str(self.search.storage))} was created with a "
                f"different search space ({recorded}); give this one a new name, e.g. --set name={self.study_name}-2",
                field="search.space")
        if self.search.storage is not None:
            optuna.storages.fail_stale_trials(self.study)
        self.coordination = OptunaCoordination(self)

    def keep_in_memory(self) -> None:
        """Hold a copy of the study in memory: the (temporary) storage it was run in is about to go."""
        storage = optuna.storages.InMemoryStorage()
        optuna.copy_study(from_study_name=self.study_name, from_storage=self.study._storage, to_storage=storage)
        self.study = optuna.load_study(study_name=self.study_name, storage=storage)

    def _trials(self) -> list[optuna.trial.FrozenTrial]:
        """The study's trials, less those that do not count: a killed trial that was retried, an interrupted one,
        and a surplus one."""
        trials = self.study.get_trials(deepcopy=False)
        numbers = (optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in trials)
        retried = {n for n in numbers if n is not None}
        return [t for t in trials if t.number not in retried and not t.user_attrs.get(_SURPLUS)
                and not t.user_attrs.get(_INTERRUPTED)]

    def done(self) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self._trials() if t.state in _DONE]

    def _claimed(self) -> tuple[int, bool]:
        """(trials done or running, in any worker; whether a retry is waiting to run)."""
        trials = self._trials()
        return sum(t.state != TrialState.WAITING for t in trials), any(t.state == TrialState.WAITING for t in trials)

    def _surplus(self, number: int) -> bool:
        """Whether trial ``number`` came after n_trials others: two workers that each saw one trial left both
        started one."""
        return sum(t.number < number and t.state != TrialState.WAITING for t in self._trials()) >= self.search.n_trials

    def planned_trials(self) -> int:
        """Trials still to run: n_trials minus those the storage already holds (once prepared)."""
        if self.study is None:
            return self.search.n_trials
        claimed, waiting = self._claimed()
        return max(self.search.n_trials - claimed, int(waiting))

    def run_search(self, evaluate: Evaluate) -> list[TrialResult]:
        """Trials until the study holds n_trials (shared with other workers); ``optimize`` keeps heartbeats."""
        results: list[TrialResult] = []

        def objective(trial: optuna.Trial) -> float:
            if self._surplus(trial.number):
                trial.set_user_attr(_SURPLUS, True)
                raise _Surplus
            params = self.space.suggest(trial)
            # without a pruner, no per-epoch write to the storage (on JAX an epoch can take less than the write)
            try:
                result = evaluate(params, trial.number, None if self.search.pruner == "none" else _Reporter(trial))
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the trial fails and does not count (a re-run redoes it)
                with contextlib.suppress(Exception):
                    trial.set_user_attr(_INTERRUPTED, True)
                raise
            for key, value in (("params", params), ("fold_scores", result.fold_scores),
                               ("run_id", result.run_id), ("reason", result.reason)):
                trial.set_user_attr(key, value)
            results.append(result)
            if result.state == "pruned":
                raise optuna.TrialPruned(result.reason)
            return result.score if result.state == "finished" else float("nan")  # NaN: Optuna records FAIL

        while (self.planned_trials() > 0 and (self.quota is None or len(results) < self.quota)
               and not evaluate.budget.exhausted()):
            try:
                self.study.optimize(objective, n_trials=1)
            except _Surplus:  # recorded as FAIL (tagged surplus, counted nowhere): the study holds n_trials
                break
            except Exception as exc:
                interrupt = _interruption(exc)
                if interrupt is not None:  # Ctrl-C mid-write left SQLite locked: Optuna could not record the trial
                    raise type(interrupt)() from None  # its heartbeat fails it; the same command resumes
                raise
        return results


class OptunaCoordination(Coordination):
    """The workers of one Optuna study: the storage says what ran, what a dead worker left, which study run."""

    def __init__(self, strategy: OptunaStrategy) -> None:
        self.strategy = strategy

    def resumes(self) -> bool:
        return self.strategy.search.storage is not None

    def killed_trials(self) -> list[int]:
        """Trials whose worker died mid-trial (failed by the heartbeat, never reported back)."""
        return [t.number for t in self.strategy.study.get_trials(deepcopy=False)
                if t.state == TrialState.FAIL and "run_id" not in t.user_attrs and not t.user_attrs.get(_SURPLUS)]

    def shared_run_id(self) -> str | None:
        """The MLflow study run every worker of this study records into.

        Workers started together all find the study new: the one that created it creates the study
        run, the others wait for it (up to ``_RUN_WAIT`` seconds) rather than create their own.
        """
        deadline = time.monotonic() + (0 if self.strategy.creator else _RUN_WAIT)
        while True:
            attrs = self.strategy.study.user_attrs  # re-read from the storage
            if "mlflow_study_run" in attrs or time.monotonic() >= deadline:
                return attrs.get("mlflow_study_run") or None
            time.sleep(0.5)

    def share_run_id(self, run_id: str | None) -> None:
        if "mlflow_study_run" not in self.strategy.study.user_attrs:  # "": the study is not tracked
            self.strategy.study.set_user_attr("mlflow_study_run", run_id or "")

    def study_results(self, results: list[TrialResult]) -> list[TrialResult]:
        """Every finished trial in the storage, earlier runs' included (this run's as measured)."""
        measured = {r.number: r for r in results}
        states = {v: k for k, v in _STATES.items()}
        killed = "killed: its worker stopped sending heartbeats"
        return [measured.get(t.number) or TrialResult(
            number=t.number, params=t.user_attrs.get("params", t.params), state=states[t.state],
            fold_scores=t.user_attrs.get("fold_scores", []), run_id=t.user_attrs.get("run_id"),
            reason=t.user_attrs.get("reason") if "run_id" in t.user_attrs else killed)
            for t in self.strategy.done()]

    def busy(self) -> bool:
        """Whether another worker is still running a trial of this study."""
        return any(t.state == TrialState.RUNNING for t in self.strategy.study.get_trials(deepcopy=False))

    def wait_for_others(self, evaluate: Evaluate) -> list[TrialResult]:
        """Wait until no other worker is running a trial (a dead one's trial fails by heartbeat and is
        retried here), so that the best of *every* trial is refit."""
        results: list[TrialResult] = []

        def more() -> bool:
            return self.strategy.planned_trials() > 0 and not evaluate.budget.exhausted()

        while self.busy() or more():
            if more():
                results += self.strategy.run_search(evaluate)
                continue
            time.sleep(min(5.0, self.strategy.search.heartbeat / 2))
            optuna.storages.fail_stale_trials(self.strategy.study)
        return results
