"""The MLflow UI door, as a user meets it: ``hpsearch ui`` (and the browser it opens), and what the address a
study prints shows in a real browser (headless Chromium) over a real MLflow server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, stop, wait_for_http

REPO = Path(__file__).resolve().parents[1]


def _ui(folder: Path, port: int, *args: str, env: dict[str, str]) -> subprocess.Popen:
    """``hpsearch ui`` in ``folder``, its output (a line per request) in ``folder/ui.log``, never a full pipe."""
    with open(folder / "ui.log", "w") as log:
        return subprocess.Popen([sys.executable, "-m", "hpsearch", "ui", "--port", str(port), *args], cwd=folder,
                                stdout=log, stderr=subprocess.STDOUT, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("no_browser", [False, True])
def test_hpsearch_ui_opens_the_runs_list_in_a_browser_unless_told_not_to(tmp_path, no_browser):
    opened = tmp_path / "opened.txt"
    # a graphical session whose browser ($BROWSER, as Python's webbrowser reads it) writes down what it was asked
    env = {**os.environ, "DISPLAY": ":0", "BROWSER": f"{sys.executable} -c \"import sys; "
                                                     f"open({str(opened)!r}, 'w').write(sys.argv[1])\" %s"}
    port = free_port()
    process = _ui(tmp_path, port, *(["--no-browser"] if no_browser else []), env=env)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process)
        deadline = time.monotonic() + (5 if no_browser else 30)
        while time.monotonic() < deadline and not opened.exists():
            time.sleep(0.2)
    finally:
        stop(process)
    if no_browser:
        assert not opened.exists()
    else:
        assert opened.read_text() == f"http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning"


def test_no_browser_is_opened_without_a_graphical_session(monkeypatch):
    from hpsearch.cli.browser import graphical

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert graphical() is (sys.platform in ("darwin", "win32"))


CHROMIUM = next((found for name in ("chromium", "chromium-browser", "google-chrome")
                 if (found := shutil.which(name))), None)
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium)")


@pytest.fixture(scope="module")
def quickstart_ui(tmp_path_factory):
    """The README's quickstart run into a fresh store, then ``hpsearch ui`` (a real MLflow server) over it on a
    free loopback port; yields (the address the run printed, on that port; the folder; the run's output)."""
    folder = tmp_path_factory.mktemp("quickstart-ui")
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "MLFLOW_TRACKING_URI")}
    done = subprocess.run([sys.executable, "-m", "hpsearch", "run", str(REPO / "studies" / "quickstart.yaml")],
                          cwd=folder, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    printed = re.search(r"then (http://127\.0\.0\.1:5000/\S+)", " ".join(done.stdout.split())).group(1)
    port = free_port()
    process = _ui(folder, port, "--no-browser", env=env)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process)
        yield printed.replace(":5000/", f":{port}/"), folder, done.stdout
    finally:
        stop(process)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's) driven by Playwright."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def _study_row_expanded(page) -> None:
    """Open the study run's row in the runs table (MLflow shows child runs folded under their parent)."""
    link = page.locator("a[href*='/runs/']", has_text="quickstart").first
    link.wait_for(timeout=60_000)
    link.locator("xpath=ancestor::*[@role='gridcell'][1]").locator("button").first.click()
    page.locator("a[href*='/runs/']", has_text="trial-000").wait_for(timeout=30_000)


@needs_browser
@pytest.mark.slow
def test_the_printed_address_shows_the_study_as_a_keras_user_expects(quickstart_ui, browser):
    address, folder, output = quickstart_ui
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(address)
    _study_row_expanded(page)
    shown = page.locator("body").inner_text()
    # model-training mode: the runs table with its Dataset column, not GenAI's traces overview
    assert "Run Name" in shown and "Dataset" in shown and "breast_cancer-training" in shown
    assert "Token" not in shown and page.get_by_text("Model training").count() == 1
    names = page.locator("a[href*='/runs/']").all_inner_texts()
    trials = sorted(n for n in names if n.startswith("trial-"))
    assert len(trials) == 4 and all(re.fullmatch(r"trial-00\d (learning_rate|n_hidden|n_neurons)=.*", n)
                                    for n in trials)  # the quickstart's 4 trials, named by their params
    page.screenshot(path=str(folder / "runs.png"))

    # one chart overlays every trial's val_loss (the mean over the folds, under Keras' own name)
    page.goto(address + "&compareRunsMode=CHART")
    page.get_by_placeholder("Search metric charts").fill("val_loss")
    section = page.get_by_text("Model metrics", exact=True)  # the unprefixed curves, below the fold<k>/ sections
    section.scroll_into_view_if_needed()
    page.get_by_text(f"{trials[0]} (val_loss)").first.wait_for(timeout=60_000)
    legend = page.locator("body").inner_text()
    assert all(f"{name} (val_loss)" in legend for name in trials), legend[:3000]
    page.screenshot(path=str(folder / "val_loss.png"))

    # the study run: the named test metrics, the datasets, the description, the interactive report
    study_run = re.search(r"study run ([0-9a-f]{32})", output).group(1)
    page.goto(address.replace("/runs?", f"/runs/{study_run}?"))
    for loaded in ("test_accuracy", "trial-000", "Every trial"):  # the page fills in part by part
        page.get_by_text(loaded).first.wait_for(timeout=60_000)
    shown = page.locator("body").inner_text()
    for expected in ("test_accuracy", "test_f1", "test_log_loss", "test_roc_auc", "Every trial",  # the description
                     "Child runs", *(name.split()[0] for name in trials),  # its trials, on its page
                     "breast_cancer-training", "+2"):  # its datasets: training, and validation and test folded
        assert expected in shown, expected
    page.get_by_text("+2", exact=True).click()
    page.get_by_text("breast_cancer-test").first.wait_for(timeout=30_000)
    page.screenshot(path=str(folder / "study_run.png"))
    page.goto(address.replace("/runs?", f"/runs/{study_run}/artifacts/report/report.html?"))
    report = page.frame_locator("iframe").first.get_by_text("Optimization History Plot")
    report.wait_for(timeout=60_000)
    page.screenshot(path=str(folder / "report.png"))
    page.close()
