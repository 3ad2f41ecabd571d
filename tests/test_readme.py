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


def test_the_scikit_learn_section_snippets_run_as_written(workdir):
    """The README's snippets on SearchCV's scikit-learn arguments, run in order in one namespace, as a reader
    pastes them (tiny epochs already: they are written to run in seconds)."""
    section = re.search(r"### scikit-learn's search arguments.*?\n## ", (REPO / "README.md").read_text(), re.S).group(0)
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) >= 5
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102  (the README's own code)
    assert namespace["rnd_search_cv"].n_trials_ == 3 and "mean_train_score" in namespace["rnd_search_cv"].cv_results_
    assert namespace["multi"].best_index_ == namespace["fastest_within_5_percent"](namespace["multi"].cv_results_)
    assert namespace["grouped"].n_splits_ == 3 and namespace["in_time"].n_splits_ == 3
