"""Every exception hpsearch raises, in two trees.

- :class:`HpsearchError`: what a user can act on (the study file, the data, a URL, a server that does not
  answer): printed as one paragraph, exit code 2 (1 for :class:`RefitFailed`), never a traceback.
- :class:`InternalSignal`: what one part of hpsearch tells another, never shown to the user as such: a trial
  that produced no usable model (:class:`TrialFailed`: recorded as a failed trial, the study goes on) and a
  tracking server that kept failing (:class:`TrackingUnavailable`: the study goes on without it). A failure of
  the storage or the tracker while a trial is recorded is a :class:`TrackingError`, never a failed trial.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, candidates: Iterable[str], n: int = 1) -> str:
    """`` (did you mean 'x'?)`` naming up to ``n`` of ``candidates`` close to ``word`` (difflib's), else ``""``."""
    close = [repr(c) for c in difflib.get_close_matches(word, list(candidates), n=n)]
    if not close:
        return ""
    names = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
    return f" (did you mean {names}?)"


class HpsearchError(Exception):
    """Base class for mistakes in the user's input (study file, data, space, URLs)."""

    exit_code = 2


class ConfigError(HpsearchError, ValueError):
    """The study file (or a ``--set`` override) is invalid; ``field`` names the offending key."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class DataError(HpsearchError, ValueError):
    """The data cannot be loaded or does not fit the study (missing file, bad column, too few rows)."""


class TrackingError(HpsearchError):
    """The tracking or storage backend cannot be reached."""


class RefitFailed(HpsearchError):
    """The best params' refit kept diverging: the trials are recorded, the study has no model (exit code 1)."""

    exit_code = 1


class Terminated(KeyboardInterrupt):  # noqa: N818  (an event, like KeyboardInterrupt)
    """SIGTERM arrived (``docker compose stop``, a process manager): handled like Ctrl-C, exit code 143."""


class InternalSignal(Exception):
    """Base class for what hpsearch's parts tell each other; caught inside hpsearch, never printed as an error."""


class TrialFailed(InternalSignal):  # noqa: N818  (reads well in a failure reason: "TrialFailed: the loss became NaN")
    """A trial that ran but produced no usable model (e.g. its loss became NaN)."""


class TrackingUnavailable(InternalSignal):  # noqa: N818  (a state, like TrialFailed)
    """The tracking server kept failing for the whole retry budget (hpsearch goes on without it)."""


def mask_credentials(url: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host`` (for every message, param and tag)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def mask_credentials_in_text(text: str) -> str:
    """Every ``scheme://user:secret@`` in a text (a study file) with the secret masked."""
    import re

    return re.sub(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]+@", r"\1***@", text)
