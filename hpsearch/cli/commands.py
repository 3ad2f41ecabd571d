"""The commands: each loads the study, calls :mod:`hpsearch.run` and prints what a user reads."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from typing import NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hpsearch.config.loading import load_study
from hpsearch.config.schema import DEFAULT_TRACKING_URI, StudyConfig, absolute_sqlite
from hpsearch.errors import mask_credentials
from hpsearch.results import StudyResult, params_text
from hpsearch.run.workers import check_shared, handed_search_start, start_afresh, start_workers, wait_for_workers
from hpsearch.tracking.layout import ui_address

console = Console()
err_console = Console(stderr=True)
_LOCAL_UI = "http://127.0.0.1:5000"  # where `hpsearch ui` serves by default


def _load(args: argparse.Namespace) -> tuple[StudyConfig, str]:
    study = load_study(args.study, args.overrides)
    return study, args.study.read_text(encoding="utf-8")


def _print_advice(study: StudyConfig) -> None:
    from hpsearch.guidance.advice import advise

    for advice in advise(study):
        console.print(f"[yellow]advice[/yellow] {escape(str(advice))}", soft_wrap=True)


def cmd_check(args: argparse.Namespace) -> int:
    from hpsearch.run.plan import check_factory_builds, plan_study, wants_auto_learning_rate

    study, _ = _load(args)
    plan = plan_study(study)
    _print_advice(study)
    if ":" in study.model.factory and not args.no_build:  # the builtin mlp's names are checked without building
        built = check_factory_builds(plan)
        console.print(f"{study.model.factory} built and trained {built} model(s) on a few rows, one per categorical "
                      "value: each builds", soft_wrap=True, highlight=False)
    if wants_auto_learning_rate(study):
        console.print("learning_rate: auto — `run` starts with a learning-rate range test per optimizer")
    fingerprint = plan.data.fingerprint()
    console.print(f"[green]ok[/green] {args.study}: study {study.name!r}, {plan.data.task} on "
                  f"{fingerprint['n_train']} train / {fingerprint['n_valid']} valid / "
                  f"{fingerprint['n_test']} test rows, "
                  f"strategy {study.search.strategy} with {plan.n_candidates} trial(s), "
                  f"{'cv=' + str(study.search.cv) if study.search.cv else 'holdout validation'}")
    return 0


def _ui_words(uri: str, experiment_id: str | None, run_id: str | None = None) -> str:
    """How to see a study in the MLflow UI: its address on a server, else the ``hpsearch ui`` command and then
    the address (the UI's model-training mode, where runs, charts and models are)."""
    if uri.startswith("http"):
        return ui_address(uri, experiment_id, run_id)
    suffix = "" if uri == absolute_sqlite(DEFAULT_TRACKING_URI) else f" --backend-store-uri {shlex.quote(uri)}"
    return f"hpsearch ui{suffix}, then {ui_address(_LOCAL_UI, experiment_id, run_id)}"


def _print_best_trials(result: StudyResult) -> None:
    table = Table(title=f"best trials of {result.name} ({result.scoring}, greater is better)")
    for column in ("trial", "score", "std", "params", "epochs"):
        table.add_column(column)
    for trial in sorted(result.finished, key=lambda t: t.score, reverse=True)[:5]:
        table.add_row(str(trial.number), f"{trial.score:.5g}", f"{trial.score_std:.3g}", params_text(trial.params),
                      "/".join(map(str, trial.fold_epochs)))
    console.print(table)


def _print_summary(result: StudyResult) -> None:
    if result.finished:
        _print_best_trials(result)
    states = {s: sum(t.state == s for t in result.trials) for s in ("finished", "pruned", "failed")}
    console.print(f"trials: {states['finished']} finished, {states['pruned']} pruned, {states['failed']} failed")
    for reason, count in result.failure_counts().items():
        console.print(f"  failed x{count}: {reason}", highlight=False)
    if result.stopped_by:
        console.print(f"the search stopped early: {result.stopped_by}", soft_wrap=True, highlight=False)
    if result.test_score is not None and math.isfinite(result.test_score):
        made = {"best_trial": "the best trial's own model", "ensemble": _ensemble_words(result.ensemble or {})
                }.get(result.final or "", "the refit best model")
        console.print(f"test score of {made}: {result.test_score:.5g}")
    if result.study_run_id is None:
        console.print("not tracked (tracking.enabled: false)")
        return
    uri = mask_credentials(result.tracking_uri or "")
    console.print(f"MLflow: experiment {result.experiment_id}, study run {result.study_run_id} at {uri}",
                  soft_wrap=True)
    if result.model_lost:
        err_console.print(f"the delivered model was not saved in MLflow ({result.model_lost}): free space where "
                          "the artifacts go and run the study again", soft_wrap=True, highlight=False)
    elif result.best_estimator is not None:
        console.print(f"best model: runs:/{result.study_run_id}/model", soft_wrap=True)
    console.print(f"open the UI: {_ui_words(uri, result.experiment_id)}", soft_wrap=True, highlight=False)


def _ensemble_words(weights: dict[int, int]) -> str:
    members = ", ".join(f"{n}" + (f" (x{w})" if w > 1 else "") for n, w in weights.items())
    return f"the ensemble of trials {members}"


def _start_afresh(args: argparse.Namespace, why: str, search_started: float | None) -> NoReturn:
    console.print(f"{why}; the study goes on in a fresh process", soft_wrap=True)
    start_afresh(args.argv, search_started)


def cmd_worker(args: argparse.Namespace) -> int:
    from hpsearch.evaluation.cpus import pin_to_cpus
    from hpsearch.models.backend import limit_threads
    from hpsearch.run.plan import plan_study
    from hpsearch.run.study import run_study

    started = handed_search_start()
    if args.cpus:
        pin_to_cpus(args.cpus)  # before TensorFlow starts its threads: they inherit it
    study, text = _load(args)
    check_shared(study)
    limit_threads(args.threads or (len(args.cpus) if args.cpus else None))
    plan = plan_study(study)
    result = run_study(study, text, plan=plan, worker=True, started=started)
    if plan.strategy.planned_trials() > 0 and result.stopped_by is None:  # execution.trials_per_process reached
        _start_afresh(args, f"worker recycled after {study.execution.trials_per_process} trials",
                      result.search_started)
    console.print(f"worker done: {len(result.trials)} trials in study {study.name!r}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from hpsearch.run.plan import plan_study
    from hpsearch.run.progress import RichObserver
    from hpsearch.run.study import open_shared_study, run_study

    started = handed_search_start()
    study, text = _load(args)
    configured = study.tracking.resolved_uri()
    if args.offline:  # an override, so that --workers' processes record offline too
        from hpsearch.tracking.sync import offline_uri

        args.overrides.append(f"tracking.uri={offline_uri()}")
        study, text = _load(args)
    plan = plan_study(study)
    _print_advice(study)
    recycled = study.execution.trials_per_process
    if args.workers > 1:
        check_shared(study)
        open_shared_study(plan, text)  # one study run, made before the workers look for it
        each = f", each starting afresh every {recycled} trials" if recycled else ""
        console.print(f"{args.workers} workers on study {study.name!r}{each}; waiting for them")
        failed = [code for code in wait_for_workers(start_workers(args.study, args.overrides, args.workers)) if code]
        if failed:
            err_console.print(f"{len(failed)} worker(s) failed; finishing with the trials recorded")
    elif recycled:  # this process takes its share of trials like a worker, then starts afresh or refits
        with RichObserver(console) as observer:
            share = run_study(study, text, observer, plan=plan, worker=True, started=started)
        started = share.search_started
        if plan.strategy.planned_trials() > 0 and share.stopped_by is None:
            _start_afresh(args, f"{recycled} trials done (execution.trials_per_process)", started)
    with RichObserver(console) as observer:
        result = run_study(study, text, observer, plan=plan, started=started)
    _print_summary(result)
    console.print(f"Keras backend: {plan.backend.name} ({plan.backend.why})", soft_wrap=True, highlight=False)
    if args.offline:
        console.print(f"recorded offline, nothing sent to {mask_credentials(configured)}; copy the study there with: "
                      f"hpsearch sync {shlex.quote(str(args.study))}", soft_wrap=True, highlight=False)
    if result.best is None:
        err_console.print(f"every trial of {study.name!r} failed ({len(result.trials)} trials); see the reasons above")
        return 1
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from hpsearch.guidance.lr_finder import check_settings
    from hpsearch.run.plan import plan_study
    from hpsearch.run.study import range_tests

    check_settings(args.start, args.end, args.iterations)
    study, _ = _load(args)
    plan = plan_study(study)
    tracker = plan.tracker()
    tracker.check_reachable()
    args.out.mkdir(parents=True, exist_ok=True)
    table = Table(title=f"learning-rate range test: {study.name} ({args.start:g} -> {args.end:g}, "
                        f"{args.iterations} iterations)")
    for column in ("optimizer", "shoots up at", "suggested (half)", "steepest descent", "plot"):
        table.add_column(column, overflow="fold")
    problems = []
    for optimizer, test, path in range_tests(plan, tracker, args.out, args.start, args.end, args.iterations):
        cells = [f"{v:.3g}" if v is not None else "-"
                 for v in (test.divergence_lr, test.suggested_lr, test.steepest_lr)]
        table.add_row(str(optimizer or "factory default"), *cells, str(path))
        problems += [f"{optimizer or 'model'}: {p}" for p in test.problems]
    console.print(table)
    for problem in problems:
        console.print(f"[yellow]warning[/yellow] {escape(problem)}", soft_wrap=True)
    console.print(f"recorded in MLflow experiment {study.experiment_name!r} (runs named lr-find*)")
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    from hpsearch.tracking.reading import latest_study_run
    from hpsearch.tracking.registry import registry_name

    client, run = latest_study_run(args.experiment, args.tracking_uri)
    metrics, tags, params = run.data.metrics, run.data.tags, run.data.params
    console.print(f"study {run.info.run_name!r} (run {run.info.run_id}), scoring {params.get('scoring')}")
    console.print(f"best params: {tags.get('hpsearch.best_params')}", highlight=False, soft_wrap=True)
    for key in ("best_score", "best_score_std", "test_score"):
        if key in metrics:
            console.print(f"{key}: {metrics[key]:.6g}")
    console.print(f"model: runs:/{run.info.run_id}/model", soft_wrap=True)
    console.print(f"registered: models:/{registry_name(run.info.run_name)}@champion", soft_wrap=True)
    where = _ui_words(mask_credentials(client.tracking_uri), run.info.experiment_id, run.info.run_id)
    console.print(f"in the UI: {where}", soft_wrap=True, highlight=False)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from hpsearch.guidance.report import write_report
    from hpsearch.tracking.reading import read_study

    files = write_report(read_study(args.experiment, args.tracking_uri), args.out, html=args.html)
    for path in files:
        console.print(str(path), highlight=False, soft_wrap=True)
    if not files:
        err_console.print(f"nothing to draw for {args.experiment!r}: no trial recorded a curve or a score")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from hpsearch.tracking.sync import offline_uri, sync_experiment

    study = load_study(args.study, args.overrides)
    target = args.target or study.tracking.resolved_uri()
    report = sync_experiment(study.experiment_name, args.source or offline_uri(), target)
    console.print(f"synced experiment {study.experiment_name!r} to {mask_credentials(target)} "
                  f"(experiment {report.experiment_id}): {report.copied} run(s) copied, "
                  f"{report.skipped} already there, "
                  f"{report.versions} model version(s) registered", soft_wrap=True, highlight=False)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from hpsearch.cli.browser import graphical, open_when_up

    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", args.backend_store_uri,
               "--host", args.host, "--port", str(args.port)]
    served = f"http://{args.host}:{args.port}"
    console.print(f"MLflow UI on {ui_address(served)} (Ctrl-C to stop)", highlight=False)
    if not args.no_browser and graphical():
        open_when_up(ui_address(served), f"{served}/health")
    sys.stdout.flush()
    os.execv(sys.executable, command)  # become the UI process: stopping hpsearch stops the UI, no orphan
