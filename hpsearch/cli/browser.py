"""``hpsearch ui`` opens the UI in the user's browser once the server answers (``--no-browser``: it does not).

A helper process of its own does the waiting (``hpsearch ui`` itself becomes the MLflow server), and only where
a graphical browser can be: on macOS, on Windows, or where ``$DISPLAY`` / ``$WAYLAND_DISPLAY`` is set. Elsewhere
Python's ``webbrowser`` would start a text browser in the terminal the server writes to.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import webbrowser

WAIT_SECONDS = 60.0


def graphical() -> bool:
    """Whether a graphical browser can be opened from here."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_when_up(address: str, health: str) -> None:
    """Start the helper that opens ``address`` once ``health`` answers (for up to :data:`WAIT_SECONDS`)."""
    subprocess.Popen([sys.executable, "-m", "hpsearch.cli.browser", address, health], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _wait_and_open(address: str, health: str) -> bool:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(health, timeout=2):
                return webbrowser.open(address)
        except OSError:
            time.sleep(0.5)
    return False


if __name__ == "__main__":
    sys.exit(0 if _wait_and_open(sys.argv[1], sys.argv[2]) else 1)
