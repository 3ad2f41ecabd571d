"""Random/grid searches beyond one process: a real Dask cluster, and resuming from the fold ledger."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import local_store, tiny_study, write_study
from mlflow import MlflowClient

from hpsearch import load_best
from hpsearch.cli.main import main

pytestmark = pytest.mark.slow

# A user's own factory that notes every model it builds (one build per fit), so a test can count fits.
COUNTING_FACTORY = '''
import json, os
from hpsearch.models.mlp import build_mlp

def build(meta, n_neurons=8, learning_rate=1e-3, optimizer="adam"):
    with open(os.environ["FIT_LOG"], "a") as log:
        log.write(json.dumps({"n_neurons": n_neurons, "learning_rate": learning_rate}) + "\\n")
    return build_mlp(meta, n_neurons=n_neurons, learning_rate=learning_rate, optimizer=optimizer)
'''


def trial_runs(experiment: str) -> list:
    client = MlflowClient(local_store())
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return [r for r in runs if r.data.tags.get("hpsearch.role") == "trial"]


def test_dask_cluster_runs_the_folds_and_every_trial_is_tracked(workdir):
    distributed = pytest.importorskip("distributed")
    study = tiny_study(name="dasked", search__n_trials=3, training__epochs=2)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        study["execution"] = {"backend": "dask", "address": cluster.scheduler_address}
        assert main(["run", str(write_study(workdir, study))]) == 0

    trials = trial_runs("dasked")
    assert sorted(int(r.data.tags["hpsearch.trial"]) for r in trials) == [0, 1, 2]
    client = MlflowClient(local_store())
    for run in trials:
        assert run.info.status == "FINISHED" and run.data.tags["hpsearch.state"] == "finished"
        for fold in (0, 1):  # each fold's curve came back from a Dask worker, one point per epoch
            history = client.get_metric_history(run.info.run_id, f"fold{fold}/loss")
            assert [m.step for m in history] == [0, 1]
        assert {"score", "fold0/score", "fold1/score"} <= set(run.data.metrics)
        assert "model" in {a.path for a in client.list_artifacts(run.info.run_id)}
    model = load_best("dasked", tracking_uri=local_store())
    assert model.predict(np.zeros((2, 30))).shape == (2,)


def test_dask_scheduler_unreachable_is_a_clear_error_before_training(workdir, capsys):
    study = tiny_study(name="nodask", execution={"backend": "dask", "address": "tcp://127.0.0.1:9"})
    assert main(["run", str(write_study(workdir, study))]) == 2
    err = capsys.readouterr().err
    assert "tcp://127.0.0.1:9" in err and "Traceback" not in err
    assert not (workdir / "mlflow.db").exists()


def test_killed_random_search_rerun_does_not_refit_finished_folds(workdir):
    (workdir / "counting.py").write_text(COUNTING_FACTORY, encoding="utf-8")
    fits = workdir / "fits.jsonl"
    study = tiny_study(name="resumed", search__n_trials=4, search__cv=2, training__epochs=3,
                       model={"factory": "counting:build", "params": {"optimizer": "adam"}})
    path = write_study(workdir, study)
    env = {**os.environ, "FIT_LOG": str(fits), "HPSEARCH_OFFLINE": "1", "PYTHONPATH": str(workdir)}
    command = [sys.executable, "-m", "hpsearch", "run", str(path)]

    first = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    recorded = 0
    while recorded < 3 and time.monotonic() < deadline and first.poll() is None:  # 3 of 8 folds finished
        time.sleep(0.2)
        if (workdir / "optuna.db").exists():
            with sqlite3.connect(workdir / "optuna.db") as db:
                try:
                    recorded = db.execute("select count(*) from hpsearch_folds").fetchone()[0]
                except sqlite3.OperationalError:
                    recorded = 0
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert recorded >= 3, "the first run did not get half way"
    with sqlite3.connect(workdir / "optuna.db") as db:
        finished = {tuple(r) for r in db.execute("select number, fold from hpsearch_folds")}
    fitted_before = len(fits.read_text().splitlines())

    second = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr

    fitted_after = len(fits.read_text().splitlines()) - fitted_before
    # 8 (candidate, fold) pairs in all; the re-run fits only those not finished, plus the best's refit.
    assert fitted_after == 8 - len(finished) + 1
    trials = trial_runs("resumed")
    assert all(r.info.status != "RUNNING" for r in trials)
    finished_runs = [r for r in trials if r.info.status == "FINISHED"]
    assert sorted(int(r.data.tags["hpsearch.trial"]) for r in finished_runs) == [0, 1, 2, 3]
    studies = MlflowClient(local_store()).search_runs(
        [trials[0].info.experiment_id], "tags.`hpsearch.role` = 'study'")
    assert len(studies) == 1 and studies[0].info.status == "FINISHED"  # the one study run, resumed
    params = [json.loads(line) for line in fits.read_text().splitlines()]
    assert len({(p["n_neurons"], p["learning_rate"]) for p in params}) == 4  # the same 4 candidates both times


def test_same_study_name_with_other_settings_is_refused(workdir, capsys):
    path = write_study(workdir, tiny_study(name="twice", search__n_trials=1, training__epochs=1))
    assert main(["run", str(path)]) == 0
    capsys.readouterr()
    assert main(["run", str(path), "--set", "training.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "epochs" in err and "--set name=twice-2" in err and "Traceback" not in err
    # another strategy on the same study is another search, as the README's quickstart suggests
    assert main(["run", str(path), "--set", "search.strategy=grid", "--set", "search.grid_points=2"]) == 0


def test_trials_per_process_recycles_processes_and_draws_no_candidate_twice(workdir):
    study = tiny_study(name="recycled", search__strategy="optuna", search__n_trials=3, search__cv=None,
                       search__pruner="none", execution={"trials_per_process": 2})
    path = write_study(workdir, study)

    def hpsearch(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "hpsearch", *args], cwd=workdir, capture_output=True, text=True,
                              env={**os.environ, "HPSEARCH_OFFLINE": "1"}, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    output = hpsearch("run", str(path))  # 2 trials, a fresh process, 1, then the final model
    assert output.count("2 trials done (execution.trials_per_process); the study goes on in a fresh process") == 1
    assert "test score of the ensemble of trials" in output  # the trials of earlier processes, loaded back
    output = hpsearch("worker", str(path), "--set", "search.n_trials=6")  # a worker grows it: 2, afresh, 1
    assert output.count("worker recycled after 2 trials") == 1 and "worker done: 6 trials in study" in output

    trials = trial_runs("recycled")
    assert sorted(int(r.data.tags["hpsearch.trial"]) for r in trials) == list(range(6))
    assert len({r.data.tags["hpsearch.process"] for r in trials}) == 2  # a process started afresh keeps its pid
    # a process joining the stored study draws with a seed of its own: no candidate is drawn twice
    assert len({(r.data.params["n_neurons"], r.data.params["learning_rate"]) for r in trials}) == 6
    best = load_best("recycled", tracking_uri=local_store())
    from sklearn.datasets import load_breast_cancer

    assert set(np.unique(best.predict(load_breast_cancer().data[:5]))) <= {0, 1}


def test_the_timeout_counts_from_the_first_process_not_from_each_fresh_one(workdir):
    study = tiny_study(name="recycled-budget", search__strategy="optuna", search__n_trials=200, search__cv=None,
                       search__pruner="none", search__timeout=4, execution={"trials_per_process": 1})
    path = write_study(workdir, study)
    done = subprocess.run([sys.executable, "-m", "hpsearch", "run", str(path)], cwd=workdir, capture_output=True,
                          text=True, env={**os.environ, "HPSEARCH_OFFLINE": "1"}, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    # each fresh process takes seconds to start: one that restarted the clock would always find time for a trial
    fresh = done.stdout.count("the study goes on in a fresh process")
    assert 1 <= fresh <= 3 and "the search stopped early: search.timeout: 4 s of searching" in done.stdout
    assert fresh <= len(trial_runs("recycled-budget")) <= fresh + 1  # one trial per process, the last may find none


def test_trials_per_process_needs_a_shared_optuna_study(workdir, capsys):
    path = write_study(workdir, tiny_study(name="plain", execution={"trials_per_process": 2}))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "execution.trials_per_process" in err and "search.strategy: optuna" in err and "Traceback" not in err
    assert not (workdir / "mlflow.db").exists()
