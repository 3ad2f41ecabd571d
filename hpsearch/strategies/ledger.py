"""The fold ledger: finished (candidate, fold) results of random and grid searches, kept in ``search.storage``.

RandomizedSearchCV and GridSearchCV cannot resume; with the same seed they propose the same
candidates, so a re-run that finds a candidate's folds here skips them (Optuna keeps its own trials).
Three tables (``hpsearch_studies``, ``hpsearch_trials``, ``hpsearch_folds``) in any SQLAlchemy
database: the default SQLite file, or PostgreSQL shared with other machines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, create_engine, select
from sqlalchemy.engine import Engine

from hpsearch.config.schema import absolute_sqlite
from hpsearch.errors import ConfigError, TrackingError, mask_credentials
from hpsearch.results import FoldResult, TrialResult

_METADATA = MetaData()
_STUDIES = Table("hpsearch_studies", _METADATA,
                 Column("study", String(200), primary_key=True),
                 Column("setup", Text, nullable=False),
                 Column("study_run_id", String(64)))
_TRIALS = Table("hpsearch_trials", _METADATA,
                Column("study", String(200), primary_key=True),
                Column("number", Integer, primary_key=True, autoincrement=False),
                Column("state", String(16), nullable=False),  # running, finished, pruned, failed
                Column("record", Text, nullable=False))
_FOLDS = Table("hpsearch_folds", _METADATA,
               Column("study", String(200), primary_key=True),
               Column("number", Integer, primary_key=True, autoincrement=False),
               Column("fold", Integer, primary_key=True, autoincrement=False),
               Column("record", Text, nullable=False))


def canonical(value: Any) -> str:
    """A stable text form of params/settings, for storing and comparing them."""
    return json.dumps(value, sort_keys=True, default=str)


class SqlLedger:
    """A :class:`~hpsearch.results.FoldLedger` in a SQLAlchemy database, for one study and strategy (a random
    and a grid search of the same study are two searches, each resumed on its own)."""

    def __init__(self, url: str, study: str, strategy: str) -> None:
        self.url, self.study, self.strategy = absolute_sqlite(url), study, strategy
        self.key = f"{study}/{strategy}"
        self._engine: Engine | None = None
        self.existed = False

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("SqlLedger.open() was not called")
        return self._engine

    def open(self, setup: dict[str, Any]) -> None:
        """Create the tables if needed; refuse a study of this name that was run with another set-up."""
        try:
            self._engine = create_engine(self.url)
            _METADATA.create_all(self._engine)
            with self._engine.begin() as db:
                recorded = db.execute(select(_STUDIES.c.setup).where(_STUDIES.c.study == self.key)).scalar()
                if recorded is None:
                    db.execute(_STUDIES.insert().values(study=self.key, setup=canonical(setup)))
        except Exception as exc:  # SQLAlchemy/driver errors: the URL is the user's to fix
            raise TrackingError(f"cannot open search.storage {mask_credentials(self.url)}: "
                                f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        self.existed = recorded is not None
        if self.existed and recorded != canonical(setup):
            changed = sorted(k for k, v in json.loads(recorded).items() if canonical(setup.get(k)) != canonical(v))
            raise ConfigError(
                f"the {self.strategy} search of study {self.study!r} in {mask_credentials(self.url)} was run with "
                f"other settings "
                f"({', '.join(changed) or 'its keys differ'} changed), so its finished trials would not match; "
                f"give this one a new name, e.g. --set name={self.study}-2", field="name")

    def study_run_id(self) -> str | None:
        with self.engine.connect() as db:
            return db.execute(select(_STUDIES.c.study_run_id).where(_STUDIES.c.study == self.key)).scalar()

    def set_study_run_id(self, run_id: str) -> None:
        with self.engine.begin() as db:
            db.execute(_STUDIES.update().where(_STUDIES.c.study == self.key).values(study_run_id=run_id))

    def trial(self, number: int) -> TrialResult | None:
        """The ended trial ``number`` (finished, pruned or failed), or None if it never ended."""
        with self.engine.connect() as db:
            row = db.execute(select(_TRIALS.c.state, _TRIALS.c.record).where(
                (_TRIALS.c.study == self.key) & (_TRIALS.c.number == number))).first()
        if row is None or row.state == "running":
            return None
        return TrialResult(**json.loads(row.record))

    def ended(self) -> list[TrialResult]:
        """Every ended trial of this search (finished, pruned or failed), by number."""
        with self.engine.connect() as db:
            records = db.execute(select(_TRIALS.c.record).where(
                (_TRIALS.c.study == self.key) & (_TRIALS.c.state != "running")).order_by(_TRIALS.c.number)).scalars()
            return [TrialResult(**json.loads(record)) for record in records]

    def unfinished(self) -> list[int]:
        """Trials that started and never ended: their process was killed mid-trial."""
        with self.engine.connect() as db:
            return list(db.execute(select(_TRIALS.c.number).where(
                (_TRIALS.c.study == self.key) & (_TRIALS.c.state == "running"))).scalars())

    def folds(self, number: int) -> dict[int, FoldResult]:
        with self.engine.connect() as db:
            records = db.execute(select(_FOLDS.c.record).where(
                (_FOLDS.c.study == self.key) & (_FOLDS.c.number == number))).scalars()
            found = [FoldResult(**json.loads(record)) for record in records]
        return {result.fold: result for result in found}

    @contextmanager
    def _writing(self, what: str) -> Iterator[Any]:
        """A transaction; a failing database is a :class:`TrackingError` naming the storage (never the trial's)."""
        try:
            with self.engine.begin() as db:
                yield db
        except Exception as exc:  # SQLAlchemy/driver errors: the storage failed, not the candidate
            raise TrackingError(f"cannot record {what} in search.storage {mask_credentials(self.url)}: "
                                f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None

    def record_fold(self, number: int, result: FoldResult) -> None:
        with self._writing(f"fold {result.fold} of trial {number}") as db:
            db.execute(_FOLDS.delete().where((_FOLDS.c.study == self.key) & (_FOLDS.c.number == number)
                                             & (_FOLDS.c.fold == result.fold)))
            db.execute(_FOLDS.insert().values(study=self.key, number=number, fold=result.fold,
                                              record=canonical(asdict(result))))

    def _put_trial(self, number: int, state: str, record: dict[str, Any]) -> None:
        with self._writing(f"trial {number}") as db:
            db.execute(_TRIALS.delete().where((_TRIALS.c.study == self.key) & (_TRIALS.c.number == number)))
            db.execute(_TRIALS.insert().values(study=self.key, number=number, state=state, record=canonical(record)))

    def start_trial(self, number: int, params: dict[str, Any]) -> None:
        self._put_trial(number, "running", {"number": number, "params": params})

    def end_trial(self, result: TrialResult) -> None:
        self._put_trial(result.number, result.state, asdict(result))
