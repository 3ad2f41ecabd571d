"""Retrying MLflow calls: transient failures (server down, restarting, overloaded) are tried again with
backoff within a budget per operation (``$HPSEARCH_TRACKING_RETRY_SECONDS``), then raise
:class:`~hpsearch.errors.TrackingUnavailable`."""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from mlflow.exceptions import MlflowException

from hpsearch.errors import ConfigError, TrackingError, TrackingUnavailable, mask_credentials, mask_credentials_in_text

_log = logging.getLogger(__name__)

_MAX_DELAY = 15.0  # between two tries of a failed tracking call
_TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}
RETRY_SECONDS_VAR = "HPSEARCH_TRACKING_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 120.0


def check_server(tracking_uri: str) -> None:
    """Fail fast, before any training, when the tracking server at ``tracking_uri`` does not answer (a store
    without a server is not checked)."""
    if urlsplit(tracking_uri).scheme not in ("http", "https"):
        return
    import requests

    try:
        requests.get(tracking_uri.rstrip("/") + "/health", timeout=5).raise_for_status()
    except requests.RequestException as exc:
        raise TrackingError(
            f"the MLflow tracking server at {mask_credentials(tracking_uri)} does not answer "
            f"({type(exc).__name__}); start it, record offline with `hpsearch run --offline` and copy the "
            "study later with `hpsearch sync`, or unset tracking.uri / MLFLOW_TRACKING_URI to record "
            "locally in ./mlflow.db"
        ) from None
    _check_credentials(tracking_uri)


def _check_credentials(tracking_uri: str) -> None:
    """A server behind MLflow's basic auth refuses a missing or wrong user or password: say so before training
    (naming the user and the variables, never the password). MLflow's own client makes the request, so that
    every way it authenticates (user and password, a token, certificates) counts."""
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri).search_experiments(max_results=1)
        return
    except MlflowException as exc:
        status = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}.get(exc.error_code)
    if status is None:
        return  # anything else surfaces where the study first writes, as before
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    who = f"user {user!r}" if user else "no user (MLFLOW_TRACKING_USERNAME is not set)"
    refused = "refused the credentials of" if status == 401 else "does not let"
    raise TrackingError(f"the MLflow tracking server at {mask_credentials(tracking_uri)} {refused} {who}"
                        f"{' read experiments' if status == 403 else ''} (HTTP {status}); set "
                        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account of that server")


def transient(exc: Exception) -> bool:
    """A failure worth retrying: the server is down, restarting, overloaded or slow."""
    if isinstance(exc, MlflowException):
        return exc.error_code in _TRANSIENT_CODES
    import requests

    return isinstance(exc, (requests.RequestException, ConnectionError, TimeoutError))


class Retry:
    """Retries transient tracking failures with exponential backoff, for at most ``seconds`` per operation.

    After one operation gave up, the next ones try once each (no waiting) until one succeeds: a server
    that is gone costs the study one retry budget, not one per call.
    """

    def __init__(self, uri: str, seconds: float) -> None:
        self.uri, self.seconds = mask_credentials(uri), seconds
        self.healthy, self._down_since = True, None

    def __call__(self, what: str, operation: Callable[[], Any], wait: bool = True) -> Any:
        deadline = time.monotonic() + (self.seconds if wait and self.healthy else 0.0)
        delay = 1.0
        while True:
            try:
                value = operation()
            except Exception as exc:
                if not transient(exc):
                    raise
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    _log.warning("hpsearch: MLflow at %s does not answer (%s); retrying for up to %g s",
                                 self.uri, short_error(exc), self.seconds)
                if time.monotonic() + delay > deadline:
                    self.healthy = False
                    raise TrackingUnavailable(f"{what}: {short_error(exc)}") from None
                time.sleep(delay)
                delay = min(2 * delay, _MAX_DELAY)
                continue
            if self._down_since is not None:
                _log.warning("hpsearch: MLflow at %s answers again (after %.0f s)", self.uri,
                             time.monotonic() - self._down_since)
            self.healthy, self._down_since = True, None
            return value


def short_error(exc: Exception) -> str:
    """``NewConnectionError on /api/2.0/mlflow/runs/log-batch`` rather than urllib3's paragraph."""
    text = exc.message if isinstance(exc, MlflowException) else str(exc)
    cause, endpoint = re.search(r"Caused by (\w+)", text), re.search(r"(/api/[\w./-]+)", text)
    if cause:
        return f"{cause.group(1)} on {endpoint.group(1)}" if endpoint else cause.group(1)
    return mask_credentials_in_text(text.splitlines()[0] if text else type(exc).__name__)[:300]


def retry_budget() -> float:
    """The retry budget of one tracking operation: ``$HPSEARCH_TRACKING_RETRY_SECONDS``, else 120 s."""
    text = os.environ.get(RETRY_SECONDS_VAR, "").strip()
    if not text:
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < math.inf:
        raise ConfigError(f"{RETRY_SECONDS_VAR}={text!r}: expected a number of seconds >= 0")
    return value
