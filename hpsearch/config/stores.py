"""The study's two databases, checked before anything is written: MLflow's store (``tracking.uri``) and the search
storage (``search.storage``) must be two databases, a SQLite file's folder must be one hpsearch can create files
in, and a PostgreSQL URL needs its driver installed."""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from hpsearch.config.schema import StudyConfig, absolute_sqlite
from hpsearch.errors import ConfigError, mask_credentials

_LOOPBACK = {"localhost", "127.0.0.1", "::1", None}
# SQLAlchemy's PostgreSQL drivers by URL suffix, and the default one (SQLAlchemy 2.1 tries psycopg 3, then psycopg2).
_PG_DRIVERS = {"psycopg": ("psycopg",), "psycopg2": ("psycopg2",), "pg8000": ("pg8000",), "asyncpg": ("asyncpg",),
               "": ("psycopg", "psycopg2")}
_PIP_NAMES = {"psycopg2": "psycopg2-binary"}


def check_stores(study: StudyConfig) -> None:
    """Refuse, naming the field, two stores in one database, a SQLite folder that cannot be made, a missing driver."""
    stores = {"search.storage": study.search.storage} if study.search.storage else {}
    if study.tracking.enabled:
        stores = {"tracking.uri": study.tracking.resolved_uri(), **stores}
    if len(stores) == 2 and same_database(*stores.values()):
        raise ConfigError(
            f"tracking.uri and search.storage both point at {mask_credentials(stores['search.storage'])}: MLflow and "
            "Optuna each keep their own schema (an alembic_version table) and cannot share one database; give each "
            "its own, e.g. tracking.uri: sqlite:///mlflow.db and search.storage: sqlite:///optuna.db",
            field="search.storage")
    for field, url in stores.items():
        _check_sqlite_folder(field, url)
        _check_driver(field, url)


def same_database(first: str, second: str) -> bool:
    """Whether two SQLAlchemy URLs name one database (the same SQLite file; the same server and database name)."""
    a, b = urlsplit(absolute_sqlite(first)), urlsplit(absolute_sqlite(second))
    if a.scheme.split("+")[0] != b.scheme.split("+")[0]:
        return False
    if a.scheme.startswith("sqlite"):
        return ":memory:" not in a.path and os.path.realpath(a.path[1:]) == os.path.realpath(b.path[1:])
    hosts = {a.hostname, b.hostname}
    same_host = len(hosts) == 1 or hosts <= _LOOPBACK
    return same_host and (a.port or 0) == (b.port or 0) and a.path.strip("/") == b.path.strip("/")


def _check_sqlite_folder(field: str, url: str) -> None:
    """A ``sqlite:///`` URL's folder exists and takes files, or the first folder that exists above it takes one."""
    if not url.startswith("sqlite:///") or ":memory:" in url:
        return
    folder = Path(absolute_sqlite(url).removeprefix("sqlite:///")).parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".hpsearch-probe-"))  # proof, not a guess from permissions
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"{mask_credentials(url)}: hpsearch cannot create the database's folder {folder} "
                          f"({existing}: {reason}); point {field} at a folder you can write to, e.g. sqlite:///"
                          f"{'mlflow' if field == 'tracking.uri' else 'optuna'}.db in this one", field=field) from None


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _check_driver(field: str, url: str) -> None:
    scheme = urlsplit(url).scheme
    family, _, driver = scheme.partition("+")
    if family != "postgresql":
        return
    modules = _PG_DRIVERS.get(driver, (driver,))
    if not any(map(_importable, modules)):
        extra = 'pip install "hpsearch[postgres]"'
        how = extra if driver in ("", "psycopg") else (
            f"pip install {_PIP_NAMES.get(driver, driver)}, or write postgresql:// (psycopg, which {extra} installs)")
        raise ConfigError(f"{mask_credentials(url)} is a PostgreSQL database, and its driver ({' or '.join(modules)})"
                          f" is not installed: {how}", field=field)
