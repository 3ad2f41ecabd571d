"""MLflow's process-wide settings as hpsearch wants them: quiet, and short HTTP retries (hpsearch retries
around them within its own budget). Applied once, when hpsearch first talks to MLflow, not on import;
values the user set win."""

from __future__ import annotations

import logging
import os
from functools import cache

_ENVIRONMENT = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # MLflow prints a "View run" link (after an extra request) every time a run on a server ends: one per trial.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    # MLflow's own HTTP retries (7 tries over ~4 minutes by default) would make every call to a server that is
    # gone block for minutes.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
# MLflow's chatter (schema migrations, the pickle-format caution we chose knowingly) is not the user's concern.
_LOGGER_LEVELS = {"mlflow": logging.WARNING, "mlflow.sklearn": logging.ERROR, "alembic": logging.WARNING}


@cache
def quiet_mlflow() -> None:
    """Set hpsearch's MLflow environment defaults and logger levels (once per process)."""
    for name, value in _ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for name, level in _LOGGER_LEVELS.items():
        logging.getLogger(name).setLevel(level)
