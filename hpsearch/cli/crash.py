"""An internal error as a user sees it: one line on the terminal, the traceback in a log file to report."""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

from hpsearch.errors import mask_credentials_in_text


def log_folder() -> Path:
    """Where internal errors are written: ``$HPSEARCH_LOG_DIR``, else ``$XDG_CACHE_HOME/hpsearch`` (``~/.cache``)."""
    explicit = os.environ.get("HPSEARCH_LOG_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "hpsearch"


def crash_summary(exc: BaseException) -> str:
    """``ValueError: the first line of its message`` (credentials in URLs masked)."""
    lines = str(exc).strip().splitlines()
    return mask_credentials_in_text(f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__)


def write_crash_log(exc: BaseException, argv: list[str]) -> Path:
    """The traceback, the command and the versions in a new file (the temporary folder if the cache is not
    writable); returns its path."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "-"

    versions = ", ".join(f"{p} {installed(p)}" for p in ("hpsearch", "keras", "scikeras", "scikit-learn",
                                                          "optuna", "mlflow"))
    text = "".join([f"hpsearch {' '.join(argv)}\n", f"Python {sys.version.split()[0]} on {platform.platform()}\n",
                    f"{versions}\n\n", *traceback.format_exception(exc)])
    name = f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (log_folder(), Path(tempfile.gettempdir()) / "hpsearch"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(mask_credentials_in_text(text), encoding="utf-8")
            return folder / name
        except OSError:
            continue
    return Path(os.devnull)
