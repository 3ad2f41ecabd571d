"""The chapter's guidance as features: LR range test, learning_rate: auto, conditional LR, presets, advice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import local_store, tiny_study, write_study
from mlflow import MlflowClient

from hpsearch.cli.main import main
from hpsearch.config.loading import load_study, parse_study
from hpsearch.errors import ConfigError
from hpsearch.guidance.advice import advise
from hpsearch.guidance.lr_finder import analyse, check_settings, exploded
from hpsearch.models.estimator import make_estimator
from hpsearch.run.study import run_study

REPO = Path(__file__).resolve().parents[1]


def u_curve(n: int = 300, start: float = 1e-5, end: float = 10.0, blow_up_at: float = 0.1) -> tuple:
    """A textbook range-test curve: flat, falling, then shooting up past ``blow_up_at``."""
    lrs = start * (end / start) ** (np.arange(n) / (n - 1))
    x = np.log10(lrs)
    falling = 2.0 - 1.5 / (1 + np.exp(-(x + 3) * 3))
    losses = np.where(lrs < blow_up_at, falling, falling + 50 * (np.log10(lrs / blow_up_at)) ** 2 + 0.01)
    return lrs, losses + np.random.default_rng(0).normal(0, 0.01, n)


def test_analysis_finds_divergence_half_of_it_and_the_steep_part():
    lrs, losses = u_curve()
    test = analyse(lrs, losses)
    assert not test.problems
    assert 0.1 < test.divergence_lr < 0.5
    assert test.suggested_lr == pytest.approx(test.divergence_lr / 2)
    assert 3e-4 < test.steepest_lr < 3e-3  # the middle of the fall (the sigmoid centre is 1e-3)
    chosen = test.search_range()
    assert chosen.log and chosen.low < test.suggested_lr < chosen.high <= test.divergence_lr


@pytest.mark.parametrize("losses, problem", [
    (np.r_[[1.0, 2.0, np.nan], np.full(297, np.nan)], "diverges at the start"),
    (np.linspace(1.0, 100.0, 300), "never decreases"),
    (np.linspace(3.0, 1.0, 300), "did not shoot up"),
])
def test_analysis_says_what_is_wrong(losses, problem):
    lrs = 1e-5 * (1e6) ** (np.arange(300) / 299)
    test = analyse(lrs, losses)
    assert any(problem in p for p in test.problems) and test.suggested_lr is None


def test_explosion_rule_and_bad_settings():
    assert exploded([1.0] * 20 + [float("nan")])
    assert not exploded(list(np.linspace(2, 1, 50)))
    assert exploded(list(np.linspace(2, 1, 50)) + [50.0] * 30)
    for start, end, iterations, text in ((0, 10, 300, "0 < start"), (1e-5, 200, 300, "end <= 100"),
                                         (1e-5, 10, 10, "too few")):
        with pytest.raises(ConfigError, match=text):
            check_settings(start, end, iterations)


def test_lr_find_command_writes_plot_and_mlflow_run(workdir, capsys):
    study = write_study(workdir, tiny_study(name="lr-quick", model={"factory": "mlp", "params": {"optimizer": "sgd"}},
                                            search__space={"n_neurons": 8}))
    assert main(["lr-find", str(study), "--iterations", "120", "--out", "plots"]) == 0
    out = capsys.readouterr().out
    assert "suggested" in out and "sgd" in out
    png = workdir / "plots" / "lr_find_sgd.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client = MlflowClient(local_store())
    runs = client.search_runs([client.get_experiment_by_name("lr-quick").experiment_id])
    (run,) = [r for r in runs if r.data.tags["hpsearch.role"] == "lr-find"]
    lrs = [m.value for m in client.get_metric_history(run.info.run_id, "lr")]
    assert 10 < len(lrs) <= 120 and lrs[0] == pytest.approx(1e-5, rel=1e-3)
    assert np.allclose(np.diff(np.log(lrs)), np.log(1e6) / 119, rtol=1e-3)  # exponential growth
    assert len(client.get_metric_history(run.info.run_id, "loss")) == len(lrs)
    assert "lr_find_sgd.png" in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.parametrize("flags", [["--start", "0"], ["--iterations", "10"], ["--end", "1000"]])
def test_lr_find_bad_settings_exit_2(workdir, capsys, flags):
    study = write_study(workdir, tiny_study())
    assert main(["lr-find", str(study), *flags]) == 2
    assert "error" in capsys.readouterr().err
    assert not (workdir / "mlflow.db").exists()


def test_lr_find_on_the_chapter_california_study(workdir, capsys, cal_housing):
    study = REPO / "studies" / "california_housing.yaml"
    assert main(["lr-find", str(study), "--set", f"data.path={cal_housing}", "--set", "data.max_rows=4000",
                 "--iterations", "200"]) == 0
    out = capsys.readouterr().out
    assert "shoots up at" in out and (workdir / "lr_find_sgd.png").is_file()


def test_learning_rate_auto_per_optimizer(workdir):
    raw = tiny_study(name="auto", search__strategy="optuna", search__n_trials=3, search__cv=None,
                     model={"factory": "mlp"},
                     search__space={"optimizer": ["sgd", "adam"], "learning_rate": "auto", "n_neurons": 8})
    result = run_study(parse_study(raw), "")
    client = MlflowClient(local_store())
    runs = client.search_runs([client.get_experiment_by_name("auto").experiment_id])
    (study_run,) = [r for r in runs if r.data.tags["hpsearch.role"] == "study"]
    assert {r.info.run_name for r in runs if r.data.tags["hpsearch.role"] == "lr-find"} == {"lr-find-sgd",
                                                                                           "lr-find-adam"}
    ranges = {opt: study_run.data.params[f"space.learning_rate:{opt}"] for opt in ("sgd", "adam")}
    assert all("log=True" in r for r in ranges.values())
    assert "auto.learning_rate:adam.suggested" in study_run.data.params
    stored = optuna.load_study(study_name="auto", storage=local_store("optuna.db"))
    for trial, ours in zip(stored.trials, result.trials):
        optimizer = trial.params["optimizer"]
        assert trial.params[f"learning_rate:{optimizer}"] == ours.params["learning_rate"]


def test_searched_optimizer_makes_the_learning_rate_conditional(workdir):
    raw = tiny_study(name="cond", search__strategy="random", search__n_trials=4, search__cv=None,
                     model={"factory": "mlp"}, training__epochs=1,
                     search__space={"optimizer": ["sgd", "adam"],
                                    "learning_rate": {"float": [1.0e-3, 1.0e-2], "log": True}})
    result = run_study(parse_study(raw), "")
    assert {t.params["optimizer"] for t in result.trials} <= {"sgd", "adam"}
    assert all(1e-3 <= t.params["learning_rate"] <= 1e-2 for t in result.trials)


def test_presets_and_skewed_classes():
    pants = load_study(REPO / "studies" / "stretch_pants.yaml")
    assert pants.model.params["n_neurons"] == 256 and pants.training.early_stopping.restore_best_weights
    assert {"learning_rate", "dropout", "l2"} <= set(pants.search.space)
    guided = load_study(REPO / "studies" / "chapter10_guided.yaml")
    assert guided.search.space["learning_rate"].log and guided.search.space["n_hidden"].high == 3
    skewed = load_study(REPO / "studies" / "skewed_classes.yaml")
    estimator = make_estimator(lambda meta: None, "binary", {}, skewed.training)
    assert estimator.class_weight == "balanced"


def test_advice_follows_the_chapter():
    assert advise(load_study(REPO / "studies" / "quickstart.yaml")) == []
    bad = parse_study({"name": "x", "data": {"dataset": "iris"}, "training": {"early_stopping": False},
                       "search": {"space": {"optimizer": ["sgd", "adam"], "n_neurons": [[300, 100]],
                                            "n_hidden": {"int": [5, 8]},
                                            "weight": {"float": [1.0e-4, 1.0e-1]}}}})
    fields = {a.field for a in advise(bad)}
    assert fields == {"search.space.weight", "training.early_stopping", "search.space.learning_rate", "n_neurons",
                      "search.space.n_hidden"}
    sgd_default = parse_study({"name": "x", "data": {"dataset": "iris"}})
    assert [a.field for a in advise(sgd_default)] == ["model.params.learning_rate"]
