"""The README's two set-up commands are the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    block = re.search(r"## Set-up.*?```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_has_the_two_setup_commands():
    quickstart, tests = setup_commands()
    assert quickstart == "pip install -e . && python -m hpsearch run studies/quickstart.yaml"
    assert "pytest" in tests
    assert (REPO / "studies" / "quickstart.yaml").is_file()


def test_ci_runs_the_readme_test_command():
    _, tests = setup_commands()
    assert tests in (REPO / ".ci" / "run").read_text().splitlines()
