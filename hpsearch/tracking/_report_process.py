"""The child process that draws a study's report (:mod:`hpsearch.guidance.report`) while the best model is
refitted, started by module name so that this package never imports the plotting code."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

_log = logging.getLogger(__name__)

_REPORT_SECONDS = 600.0
# ``python -m hpsearch.guidance.report`` at a lower CPU priority (os.nice: POSIX only)
REPORT_PROCESS = ("import os, runpy; hasattr(os, 'nice') and os.nice(10); "
                   "runpy.run_module('hpsearch.guidance.report', run_name='__main__', alter_sys=True)")


def child_env() -> dict[str, str]:
    """This process' environment, with this hpsearch first on the path when it runs from a checkout that may not
    be installed (an installed one is found anyway; site-packages ahead of the standard library could shadow it)."""
    env, root = dict(os.environ), Path(__file__).resolve().parents[1]
    if not {"site-packages", "dist-packages"} & set(root.parts):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return env


def draw_report(process: subprocess.Popen, request: str) -> str | None:
    """Send the report process its one request and wait for it to exit: None, or why it failed. Its warnings (a
    part of the report it could not draw) are passed on."""
    try:
        _, errors = process.communicate(request + "\n", timeout=_REPORT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return f"no report after {_REPORT_SECONDS:g} s"
    if process.returncode == 0:
        for line in errors.splitlines():
            if line.startswith("hpsearch: "):
                _log.warning("%s", line)
        return None
    return errors.strip().splitlines()[-1] if errors.strip() else f"exit code {process.returncode}"
