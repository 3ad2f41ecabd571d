"""The strategy contract, run over every strategy (random, grid, optuna, halving) with and without a storage.

A fake evaluator scores candidates with a formula (no Keras): what is checked is what the runner relies on.
A new strategy is tested by adding its name to STRATEGIES.
"""

from __future__ import annotations

import math
import time

import pytest

from hpsearch.config.loading import parse_search
from hpsearch.evaluation.budget import Budget
from hpsearch.results import FoldResult, TrialResult
from hpsearch.space.dimensions import Categorical, Float, Int
from hpsearch.space.space import SearchSpace
from hpsearch.strategies import make_strategy
from hpsearch.strategies.evaluate import one_by_one

STRATEGIES = ["random", "grid", "optuna", "halving"]
SPACE = {"n_neurons": Int(1, 64), "learning_rate": Float(1e-4, 1e-1, log=True),
         "activation": Categorical(["relu", "selu"])}
SETUP = {"data.sha256": "fake", "seed": 7}


class FakeEvaluate:
    """Scores a candidate by a formula; fails every ``fail_every``-th call; records folds in a ledger."""

    def __init__(self, budget: Budget | None = None, fail_every: int = 0) -> None:
        self.budget = budget or Budget()
        self.budget.start()
        self.fail_every, self.calls = fail_every, []

    def __call__(self, params, number, reporter=None, ledger=None) -> TrialResult:
        self.calls.append(number)
        result = TrialResult(number=number, params=params)
        if ledger:
            ledger.start_trial(number, params)
        if self.fail_every and len(self.calls) % self.fail_every == 0:
            result.state, result.reason = "failed", "ValueError: a failing candidate"
        else:
            score = -(math.log10(params["learning_rate"]) + 2) ** 2 - (params["n_neurons"] - 30) ** 2 / 1000
            for step in range(1, 4):
                if reporter is not None and reporter.should_prune(score - 1 / step, step):
                    result.state, result.reason = "pruned", f"pruned at epoch {step} of fold 0"
                    break
            else:
                result.fold_scores, result.fold_epochs = [score], [3]
                if ledger:
                    ledger.record_fold(number, FoldResult(0, score, 3, 0.01, 0.001))
        if ledger:
            ledger.end_trial(result)
        self.budget.record(result)
        return result

    def many(self, candidates, ledger=None) -> list[TrialResult]:
        return one_by_one(self, candidates, ledger)


def strategy(kind: str, storage: str | None, n_trials: int = 6, seed: int = 7):
    search = parse_search({"strategy": kind, "n_trials": n_trials, "storage": storage, "grid_points": 2,
                           "pruner": "none"})
    made = make_strategy(search, SearchSpace(SPACE), seed, "contract", ("epochs", 9))
    made.prepare(SETUP)
    return made


@pytest.fixture(params=[None, "sqlite"], ids=["in-memory", "stored"])
def storage(request, tmp_path):
    return None if request.param is None else f"sqlite:///{tmp_path / 'storage.db'}"


@pytest.mark.parametrize("kind", STRATEGIES)
def test_a_search_evaluates_each_planned_candidate_once_with_values_keras_takes(kind, storage):
    searching = strategy(kind, storage)
    planned = searching.planned_trials()
    evaluate = FakeEvaluate()
    results = searching.run_search(evaluate)
    assert len(results) == planned == len(set(evaluate.calls)) == len(evaluate.calls)
    assert sorted(r.number for r in results) == list(range(planned))
    for result in results:
        assert type(result.params["n_neurons"]) is int and 1 <= result.params["n_neurons"] <= 64
        assert type(result.params["learning_rate"]) is float and 1e-4 <= result.params["learning_rate"] <= 1e-1
        assert result.params["activation"] in ("relu", "selu")


@pytest.mark.parametrize("kind", STRATEGIES)
def test_failing_candidates_are_results_and_the_search_goes_on(kind, storage):
    searching = strategy(kind, storage)
    planned = searching.planned_trials()
    results = searching.run_search(FakeEvaluate(fail_every=2))
    assert len(results) == planned
    assert {r.state for r in results} == {"finished", "failed"}


@pytest.mark.parametrize("kind", STRATEGIES)
def test_an_exhausted_budget_starts_no_trial(kind, storage):
    past = Budget(timeout=1.0, since=time.time() - 10)
    assert strategy(kind, storage).run_search(FakeEvaluate(past)) == []


@pytest.mark.parametrize("kind", STRATEGIES)
def test_the_same_seed_proposes_the_same_candidates(kind, tmp_path):
    first = strategy(kind, None).run_search(FakeEvaluate())
    second = strategy(kind, None).run_search(FakeEvaluate())
    assert [r.params for r in first] == [r.params for r in second]


@pytest.mark.parametrize("kind", STRATEGIES)
def test_a_stored_study_resumes_without_evaluating_anything_again(kind, tmp_path):
    stored = f"sqlite:///{tmp_path / 'storage.db'}"
    first = strategy(kind, stored)
    assert not first.coordination.resumes() or kind == "optuna"  # Optuna resumes any stored study
    done = first.run_search(FakeEvaluate())
    again = strategy(kind, stored)
    evaluate = FakeEvaluate()
    assert again.coordination.resumes()
    assert again.planned_trials() == 0
    again.run_search(evaluate)
    assert evaluate.calls == []
    every = again.coordination.study_results([])
    assert sorted(r.number for r in every) == sorted(r.number for r in done)
    assert {r.number: r.score for r in every} == pytest.approx({r.number: r.score for r in done})


@pytest.mark.parametrize("kind", STRATEGIES)
def test_the_shared_study_run_is_remembered_only_where_there_is_a_storage(kind, storage):
    first = strategy(kind, storage)
    first.coordination.share_run_id("run-of-the-study")
    joining = strategy(kind, storage)
    assert joining.coordination.shared_run_id() == ("run-of-the-study" if storage else None)
    assert joining.coordination.killed_trials() == []
    assert not joining.coordination.busy()


@pytest.mark.parametrize("kind", STRATEGIES)
def test_a_worker_quota_or_a_resume_never_runs_more_than_n_trials(kind, tmp_path):
    stored = f"sqlite:///{tmp_path / 'storage.db'}"
    first = strategy(kind, stored)
    first.quota = 2
    first_results = first.run_search(FakeEvaluate())
    rest = strategy(kind, stored)
    rest_results = rest.run_search(FakeEvaluate())
    planned = strategy(kind, None).planned_trials()
    numbers = [r.number for r in first_results] + [r.number for r in rest_results if r.number not in
                                                    {f.number for f in first_results}]
    assert sorted(numbers) == list(range(planned))


def test_two_optuna_workers_that_both_saw_one_trial_left_run_n_trials_not_more(tmp_path, monkeypatch):
    """The race of two workers on a shared study: each saw one trial left and asked Optuna for one. The later
    trial is not run: it is recorded as a surplus FAIL that counts nowhere (no trial, no killed trial)."""
    stored = f"sqlite:///{tmp_path / 'storage.db'}"
    first = strategy("optuna", stored, n_trials=2)
    first.run_search(FakeEvaluate())
    other = strategy("optuna", stored, n_trials=2)
    monkeypatch.setattr(type(other), "planned_trials", lambda self: 1)  # its check ran before the last trial began
    evaluate = FakeEvaluate()
    assert other.run_search(evaluate) == [] and evaluate.calls == []
    assert len(other.study.trials) == 3 and other.study.trials[-1].state.name == "FAIL"
    monkeypatch.undo()
    assert other.planned_trials() == 0
    assert sorted(r.number for r in other.coordination.study_results([])) == [0, 1]
    assert other.coordination.killed_trials() == []


def test_optuna_failing_to_record_a_trial_interrupted_by_ctrl_c_is_still_the_interruption(tmp_path, monkeypatch):
    """Ctrl-C in the middle of a storage write can leave SQLite locked; Optuna then fails recording the interrupted
    trial (an AssertionError raised while handling the KeyboardInterrupt). The user pressed Ctrl-C: that is what
    reaches the command line (exit 130, its message), not Optuna's traceback."""
    searching = strategy("optuna", f"sqlite:///{tmp_path / 'storage.db'}")

    def optimize(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise AssertionError("Should not reach.") from None

    monkeypatch.setattr(searching.study, "optimize", optimize)
    with pytest.raises(KeyboardInterrupt):
        searching.run_search(FakeEvaluate())


def test_successive_halving_keeps_the_best_third_and_triples_their_epochs():
    """27 candidates over 100 epochs: 27 at 3 epochs, the best 9 at 11, the best 3 at 33, the best one at 100 (each
    round's candidates chosen by the previous round's scores); the study's best is the last round's."""
    searching = strategy("halving", None, n_trials=27)
    searching.epochs = 100
    assert searching.schedule() == [(27, 3), (9, 11), (3, 33), (1, 100)]
    results = searching.run_search(FakeEvaluate())
    rounds = [[r for r in results if r.params["epochs"] == epochs] for epochs in (3, 11, 33, 100)]
    assert [len(r) for r in rounds] == [27, 9, 3, 1]
    for earlier, later in zip(rounds, rounds[1:]):
        kept = sorted(earlier, key=lambda r: -r.score)[:len(later)]
        assert [{k: v for k, v in r.params.items() if k != "epochs"} for r in kept] == \
            [{k: v for k, v in r.params.items() if k != "epochs"} for r in later]
    assert searching.best_of(results) == rounds[-1][0].number
