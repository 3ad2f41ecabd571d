"""The study report: real studies recorded in a real MLflow store, drawn to PNGs and logged back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_study
from mlflow import MlflowClient

from hpsearch.cli.main import main
from hpsearch.config.loading import parse_study
from hpsearch.guidance.importance import param_importances
from hpsearch.guidance.report import curve_x, normalise, write_report
from hpsearch.run.study import run_study
from hpsearch.tracking._report_process import REPORT_PROCESS
from hpsearch.tracking.mlflow_tracker import MlflowTracker
from hpsearch.tracking.reading import collect
from hpsearch.tracking.recorded import StudyRecord, TrialRecord, parse_param

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL_PLOTS = {"learning_curves.png", "score_vs_learning_rate.png", "score_vs_depth_width.png",
             "optimization_history.png", "parallel_coordinates.png", "param_importance.png"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One tiny Optuna study (3 trials, 2-fold cv) trained once for the module; returns its tracking URI.

    URIs are absolute: MLflow caches one store per URI, so a relative ``sqlite:///mlflow.db`` would keep
    pointing at the folder of whichever test opened it first.
    """
    folder = tmp_path_factory.mktemp("report-study")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        run_study(parse_study(tiny_study(name="report", search__strategy="optuna", search__n_trials=3,
                                         tracking__uri=uri)), "")
    return uri


def assert_pngs(files: list[Path]) -> None:
    for path in files:
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path
        assert path.stat().st_size > 10_000, path


@pytest.mark.slow
def test_a_study_run_gets_its_report(store):
    client = MlflowClient(store)
    study = collect(client, "report").study_run_id
    assert {a.path for a in client.list_artifacts(study, "report")} == {f"report/{name}" for name in
                                                                        ALL_PLOTS | {"report.html"}}


def test_a_study_with_report_off_records_everything_but_the_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_study(parse_study(tiny_study(name="unreported", search__n_trials=1, search__cv=None,
                                              tracking__uri=uri, tracking__report=False)), "")
    client = MlflowClient(uri)
    artifacts = {a.path for a in client.list_artifacts(result.study_run_id)}
    assert "model" in artifacts and "report" not in artifacts
    assert client.get_run(result.study_run_id).info.status == "FINISHED"


def test_a_report_that_fails_is_a_warning_and_the_study_goes_on(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "reported", log_models=False)
    tracker.start_study("reported", {"seed": 1}, "name: reported\n", resume=False)
    MlflowClient(uri).rename_experiment(tracker.experiment_id, "renamed-meanwhile")  # the report cannot find it
    tracker.start_report()
    tracker.wait()  # no exception
    assert "the study report was not logged: TrackingError: no MLflow experiment named 'reported'" in caplog.text
    tracker.abort("test over", status="FINISHED")
    assert MlflowClient(uri).get_run(tracker.study.run_id).info.status == "FINISHED"


def test_the_report_process_ends_quietly_when_its_study_never_asks():
    """A tracker that dies (or aborts) before the refit is over closes the pipe: the process just exits."""
    done = subprocess.run([sys.executable, "-c", REPORT_PROCESS], input="", capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.slow
def test_report_command_writes_every_plot(store, tmp_path, capsys):
    assert main(["report", "report", "--out", str(tmp_path / "out"), "--tracking-uri", store]) == 0
    files = sorted((tmp_path / "out").iterdir())
    assert {p.name for p in files} == ALL_PLOTS  # PNGs only, unless --html
    assert set(capsys.readouterr().out.split()) == {str(p) for p in files}
    assert_pngs(files)


@pytest.mark.slow
def test_report_html_is_one_interactive_page_that_opens_offline(store, tmp_path, capsys):
    assert main(["report", "report", "--out", str(tmp_path / "out"), "--tracking-uri", store, "--html"]) == 0
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert str(tmp_path / "out" / "report.html") in capsys.readouterr().out
    assert '<script src="http' not in page and "Plotly.newPlot" in page and len(page) > 1_000_000  # plotly.js inside
    for title in ("Optimization History Plot", "Parallel Coordinate Plot", "Slice Plot",
                  "Hyperparameter Importances", "Optuna's intermediate values", "validation loss per epoch",
                  "score vs learning rate"):
        assert title in page, title


def test_a_page_plotly_cannot_draw_is_a_warning_and_the_pngs_are_written(tmp_path, monkeypatch, caplog):
    def broken(record, path):
        raise ValueError("plotly refused")

    monkeypatch.setattr("hpsearch.guidance.report.write_html", broken)
    trials = [TrialRecord(k, "finished", {"learning_rate": 10.0 ** -k, "n_neurons": 8 * k}, 0.5 + k / 10,
                          {"loss": [(0, 1.0), (1, 0.5)], "val_loss": [(0, 1.1), (1, 0.6)]}) for k in range(1, 4)]
    files = write_report(StudyRecord("e", "run", "broken-html", "accuracy", False, trials), tmp_path)
    assert "report.html" not in {p.name for p in files} and "learning_curves.png" in {p.name for p in files}
    assert "report.html was not written (ValueError: plotly refused); the PNGs were" in caplog.text


@pytest.mark.slow
def test_collect_returns_the_trials_as_plain_data(store):
    record = collect(MlflowClient(store), "report")
    assert record.name == "report" and record.scoring == "accuracy" and record.cv
    assert [t.number for t in record.trials] == [0, 1, 2]
    for trial in record.trials:
        assert trial.state == "finished" and 0 < trial.score <= 1
        assert isinstance(trial.params["n_neurons"], int) and 4 <= trial.params["n_neurons"] <= 16
        assert isinstance(trial.params["learning_rate"], float) and 1e-3 <= trial.params["learning_rate"] <= 1e-2
        epochs = len(trial.curves["loss"])
        assert 1 <= epochs <= 4 and [s for s, _ in trial.curves["val_loss"]] == list(range(epochs))


@pytest.mark.slow
def test_param_importances_cover_the_searched_params(store):
    importances = param_importances(collect(MlflowClient(store), "report"))
    assert set(importances) == {"n_neurons", "learning_rate"}
    assert sum(importances.values()) == pytest.approx(1.0)


@pytest.mark.slow
def test_the_report_process_draws_the_record_it_is_sent(store, tmp_path):
    """What the tracker hands its report process: a folder, the record as JSON (NaN included), the importances."""
    record = collect(MlflowClient(store), "report")
    record.trials[0].curves["loss"].append((99, float("nan")))
    request = json.dumps({"folder": str(tmp_path), "record": record.to_dict(), "importances": {"n_neurons": 1.0}})
    done = subprocess.run([sys.executable, "-c", REPORT_PROCESS], input=request + "\n",
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (0, "")
    assert {p.name for p in tmp_path.iterdir()} == ALL_PLOTS | {"report.html"}
    assert_pngs([p for p in tmp_path.iterdir() if p.suffix == ".png"])


def test_records_survive_the_json_trip():
    curve = [(0, 1.0), (1, float("inf"))]
    record = StudyRecord("e", "run", "s", "r2", True, [TrialRecord(3, "finished", {"n_neurons": [30, 30]}, 0.5,
                                                                  {"loss": curve, "val_loss": curve[:1]})])
    assert StudyRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


@pytest.mark.slow
def test_unknown_experiment_or_store_is_a_clear_error(store, tmp_path, capsys):
    assert main(["report", "nope", "--out", str(tmp_path / "out"), "--tracking-uri", store]) == 2
    assert "no MLflow experiment named 'nope'" in capsys.readouterr().err
    absent = f"sqlite:///{tmp_path / 'absent.db'}"
    assert main(["report", "report", "--out", str(tmp_path / "out"), "--tracking-uri", absent]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    assert not (tmp_path / "absent.db").exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_study_whose_trials_all_failed_still_reports(workdir, monkeypatch):
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    raw = tiny_study(name="all-failed", search__space={"learning_rate": 1.0e6}, data={"dataset": "diabetes"},
                     model={"factory": "mlp", "params": {"optimizer": "sgd"}}, training__early_stopping=False,
                     search__cv=None, search__n_trials=1, tracking__uri=uri)
    run_study(parse_study(raw), "")
    record = collect(MlflowClient(uri), "all-failed")
    assert [t.state for t in record.trials] == ["failed"] and not record.finished
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the report command's default
    assert main(["report", "all-failed", "--out", str(workdir / "out")]) == 0
    files = list((workdir / "out").iterdir())
    assert len(files) < len(ALL_PLOTS) and "optimization_history.png" not in {p.name for p in files}
    assert_pngs(files)
    assert param_importances(record) == {}


def test_training_points_sit_half_an_epoch_before_validation():
    assert curve_x([0, 1, 2], training=True) == [0.5, 1.5, 2.5]
    assert curve_x([0, 1, 2], training=False) == [1.0, 2.0, 3.0]


def test_params_parse_back_and_normalise():
    assert parse_param("12") == 12 and parse_param("0.003") == 0.003
    assert parse_param("[300, 100]") == [300, 100]
    assert parse_param("relu") == "relu" and parse_param("true") == "true"
    scaled, log = normalise([1e-4, 1e-3, 1e-2])
    assert log and list(scaled) == pytest.approx([0.0, 0.5, 1.0])
    scaled, log = normalise([2, 4, 3])
    assert not log and list(scaled) == pytest.approx([0.0, 1.0, 0.5])
    assert list(normalise([7, 7])[0]) == [0.5, 0.5]


def test_layer_lists_categoricals_pruned_and_failed_trials(tmp_path):
    """Recorded data of every kind (no training): lists as widths, strings as categories, unscored trials."""
    def trial(number: int, state: str, n_neurons: str, optimizer: str, score: float | None) -> TrialRecord:
        params = {"n_hidden": 2, "n_neurons": parse_param(n_neurons), "optimizer": optimizer,
                  "learning_rate": 10.0 ** -number}
        curve = [(step, 1.0 / (step + 1)) for step in range(3)]
        return TrialRecord(number, state, params, score, {"loss": curve, "val_loss": curve})

    record = StudyRecord("e", "run", "kinds", "neg_mean_squared_error", False, [
        trial(1, "finished", "[300, 100]", "sgd", -0.5), trial(2, "finished", "[50]", "adam", -0.4),
        trial(3, "finished", "[30, 30]", "sgd", -0.7), trial(4, "pruned", "[10]", "adam", None),
        trial(5, "failed", "[10]", "sgd", None)])
    assert set(param_importances(record)) == {"n_neurons", "optimizer", "learning_rate"}  # n_hidden is constant
    files = write_report(record, tmp_path)
    assert {p.name for p in files} == ALL_PLOTS | {"report.html"}  # the interactive page draws them all too
    assert_pngs([p for p in files if p.suffix == ".png"])


def test_report_module_loads_neither_keras_nor_mlflow():
    code = "import sys, hpsearch.guidance.report; print(sorted({'tensorflow', 'keras', 'mlflow'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
