"""The command line: parse -> call the runner -> print -> exit code (2 for the user's mistakes)."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hpsearch.config import DEFAULT_TRACKING_URI, StudyConfig, absolute_sqlite, load_study
from hpsearch.errors import ConfigError, HpsearchError, mask_credentials
from hpsearch.results import StudyResult

console = Console()
err_console = Console(stderr=True)


def _add_study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", type=Path, help="the study file (YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a field of the study file, e.g. --set search.strategy=optuna (repeatable)")


def _cpu_list(text: str) -> list[int]:
    """``0``, ``2,3``, ``0-3`` -> CPU numbers."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.partition("-")
        last = last if dash else first
        span = range(int(first), int(last) + 1) if first.isdigit() and last.isdigit() else range(0)
        if not span:
            raise argparse.ArgumentTypeError(f"{text!r} is not a list of CPU numbers such as 0 or 2,3 or 0-3")
        cpus.update(span)
    return sorted(cpus)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpsearch", description="Tracked hyperparameter search for Keras models.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a study: search, refit the best, test it, record all")
    _add_study_arguments(run)
    run.add_argument("--workers", type=int, default=1, help="worker processes sharing an Optuna study (default 1)")
    run.add_argument("--offline", action="store_true",
                     help="record in ./mlflow-offline.db without contacting the tracking server; "
                          "`sync` copies it later")
    sync = commands.add_parser("sync", help="copy a study recorded with run --offline to the tracking server")
    _add_study_arguments(sync)
    sync.add_argument("--from", dest="source", default=None, help="default: sqlite:///mlflow-offline.db (this folder)")
    sync.add_argument("--to", dest="target", default=None,
                      help="default: the study's tracking.uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    worker = commands.add_parser("worker", help="join a study's shared Optuna storage and run some of its trials")
    _add_study_arguments(worker)
    worker.add_argument("--threads", type=int, default=None,
                        help="TensorFlow threads of this worker (default: one per CPU it may use)")
    worker.add_argument("--cpus", type=_cpu_list, default=None, metavar="LIST",
                        help="run only on these CPUs, e.g. 0 or 2,3 or 0-3 (default: any)")
    _add_study_arguments(commands.add_parser("check", help="validate a study file and its data without training"))
    lr_find = commands.add_parser("lr-find", help="the learning-rate range test on the study's model")
    _add_study_arguments(lr_find)
    lr_find.add_argument("--start", type=float, default=1e-5, help="first learning rate (default 1e-5)")
    lr_find.add_argument("--end", type=float, default=10.0, help="last learning rate (default 10)")
    lr_find.add_argument("--iterations", type=int, default=300, help="batches, the LR growing exponentially")
    lr_find.add_argument("--out", type=Path, default=Path("."), help="folder for the plot(s) (default: here)")
    best = commands.add_parser("best", help="print a study's best params, scores and model URIs from MLflow")
    best.add_argument("experiment", help="the study's MLflow experiment (by default the study name)")
    best.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    report = commands.add_parser("report", help="draw a recorded study's plots (learning curves, scores, importances)")
    report.add_argument("experiment", help="the MLflow experiment (the study name unless tracking.experiment is set)")
    report.add_argument("--out", type=Path, default=Path("report"), help="folder for the PNGs (default: ./report)")
    report.add_argument("--tracking-uri", default=None, help=f"default: $MLFLOW_TRACKING_URI or {DEFAULT_TRACKING_URI}")
    ui = commands.add_parser("ui", help="open the MLflow UI on what the runs recorded")
    ui.add_argument("--backend-store-uri", default=DEFAULT_TRACKING_URI, help=f"default: {DEFAULT_TRACKING_URI}")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--host", default="127.0.0.1")
    return parser


def _load(args: argparse.Namespace) -> tuple[StudyConfig, str]:
    study = load_study(args.study, args.overrides)
    return study, args.study.read_text(encoding="utf-8")


def _print_advice(study: StudyConfig) -> None:
    from hpsearch.advice import advise

    for advice in advise(study):
        console.print(f"[yellow]advice[/yellow] {escape(str(advice))}", soft_wrap=True)


def cmd_check(args: argparse.Namespace) -> int:
    from hpsearch.runner import plan_study, wants_auto_learning_rate

    study, _ = _load(args)
    plan = plan_study(study)
    _print_advice(study)
    if wants_auto_learning_rate(study):
        console.print("learning_rate: auto — `run` starts with a learning-rate range test per optimizer")
    fingerprint = plan.data.fingerprint()
    console.print(f"[green]ok[/green] {args.study}: study {study.name!r}, {plan.data.task} on "
                  f"{fingerprint['n_train']} train / {fingerprint['n_valid']} valid / "
                  f"{fingerprint['n_test']} test rows, "
                  f"strategy {study.search.strategy} with {plan.n_candidates} trial(s), "
                  f"{'cv=' + str(study.search.cv) if study.search.cv else 'holdout validation'}")
    return 0


def _ui_command(uri: str) -> str:
    suffix = "" if uri == absolute_sqlite(DEFAULT_TRACKING_URI) else f" --backend-store-uri {shlex.quote(uri)}"
    return "hpsearch ui" + suffix if not uri.startswith("http") else f"open {uri} in a browser"


def _print_best_trials(result: StudyResult) -> None:
    table = Table(title=f"best trials of {result.name} ({result.scoring}, greater is better)")
    for column in ("trial", "score", "std", "params", "epochs"):
        table.add_column(column)
    for trial in sorted(result.finished, key=lambda t: t.score, reverse=True)[:5]:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        table.add_row(str(trial.number), f"{trial.score:.5g}", f"{trial.score_std:.3g}", params,
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
    if result.best_estimator is not None:
        console.print(f"best model: runs:/{result.study_run_id}/model", soft_wrap=True)
    console.print(f"open the UI: {_ui_command(uri)}", soft_wrap=True)


def _ensemble_words(weights: dict[int, int]) -> str:
    members = ", ".join(f"{n}" + (f" (x{w})" if w > 1 else "") for n, w in weights.items())
    return f"the ensemble of trials {members}"


def _check_shared(study: StudyConfig) -> None:
    if study.search.strategy != "optuna" or study.search.storage is None:
        raise ConfigError("workers share an Optuna storage: set search.strategy: optuna and search.storage "
                          "(sqlite:///optuna.db on one machine, postgresql://... across machines)",
                          field="search.strategy")


_SEARCH_STARTED = "HPSEARCH_SEARCH_STARTED"  # handed from a process to the fresh one that carries its search on


def _search_started() -> float | None:
    """When the search began in the process that handed it on to this one (``time.time()``); None: it begins here."""
    handed = os.environ.pop(_SEARCH_STARTED, "")
    try:
        return float(handed) if handed else None
    except ValueError:
        return None


def _start_workers(args: argparse.Namespace, count: int) -> list[subprocess.Popen]:
    """``count`` worker processes on the same study, each pinned to its own share of the CPUs where it can be."""
    from hpsearch.execution import cpu_groups, share_of_cores

    command = [sys.executable, "-m", "hpsearch", "worker", str(args.study)]
    for override in args.overrides:
        command += ["--set", override]
    groups = cpu_groups(count)
    places = [["--cpus", ",".join(map(str, cpus))] for cpus in groups] if groups else \
        [["--threads", str(share_of_cores(count))]] * count
    return [subprocess.Popen(command + place, stdout=subprocess.DEVNULL) for place in places]


def cmd_worker(args: argparse.Namespace) -> int:
    from hpsearch.execution import pin_to_cpus
    from hpsearch.models.backend import limit_threads
    from hpsearch.runner import plan_study, run_study

    started = _search_started()
    if args.cpus:
        pin_to_cpus(args.cpus)  # before TensorFlow starts its threads: they inherit it
    study, text = _load(args)
    _check_shared(study)
    limit_threads(args.threads or (len(args.cpus) if args.cpus else None))
    plan = plan_study(study)
    result = run_study(study, text, plan=plan, worker=True, started=started)
    if plan.strategy.planned_trials() > 0 and result.stopped_by is None:  # execution.trials_per_process reached
        _start_afresh(args, f"worker recycled after {study.execution.trials_per_process} trials",
                      result.search_started)
    console.print(f"worker done: {len(result.trials)} trials in study {study.name!r}")
    return 0


def _start_afresh(args: argparse.Namespace, why: str, search_started: float | None) -> NoReturn:
    """Replace this process (same pid) by a fresh one running the same command: the study goes on from its
    storage (its ``search.timeout`` from ``search_started``), and the memory Keras kept from earlier trials is
    returned."""
    console.print(f"{why}; the study goes on in a fresh process", soft_wrap=True)
    if search_started is not None:
        os.environ[_SEARCH_STARTED] = repr(search_started)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "hpsearch", *args.argv])


def cmd_run(args: argparse.Namespace) -> int:
    from hpsearch.progress import RichObserver
    from hpsearch.runner import open_shared_study, plan_study, run_study

    started = _search_started()
    study, text = _load(args)
    configured = study.tracking.resolved_uri()
    if args.offline:  # an override, so that --workers' processes record offline too
        from hpsearch.sync import offline_uri

        args.overrides.append(f"tracking.uri={offline_uri()}")
        study, text = _load(args)
    plan = plan_study(study)
    _print_advice(study)
    recycled = study.execution.trials_per_process
    if args.workers > 1:
        _check_shared(study)
        open_shared_study(plan, text)  # one study run, made before the workers look for it
        each = f", each starting afresh every {recycled} trials" if recycled else ""
        console.print(f"{args.workers} workers on study {study.name!r}{each}; waiting for them")
        failed = [w for w in _start_workers(args, args.workers) if w.wait() != 0]
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
    from hpsearch.lr_finder import check_settings, optimizers_of, plot, range_test
    from hpsearch.runner import plan_study
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
    for optimizer in optimizers_of(plan):
        test = range_test(plan, optimizer, args.start, args.end, args.iterations)
        path = plot(test, args.out / (f"lr_find_{optimizer}.png" if optimizer else "lr_find.png"))
        tracker.log_range_test(study.name, test, path)
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
    from hpsearch.tracking import latest_study_run, registry_name

    _, run = latest_study_run(args.experiment, args.tracking_uri)
    metrics, tags, params = run.data.metrics, run.data.tags, run.data.params
    console.print(f"study {run.info.run_name!r} (run {run.info.run_id}), scoring {params.get('scoring')}")
    console.print(f"best params: {tags.get('hpsearch.best_params')}", highlight=False, soft_wrap=True)
    for key in ("best_score", "best_score_std", "test_score"):
        if key in metrics:
            console.print(f"{key}: {metrics[key]:.6g}")
    console.print(f"model: runs:/{run.info.run_id}/model", soft_wrap=True)
    console.print(f"registered: models:/{registry_name(run.info.run_name)}@champion", soft_wrap=True)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from hpsearch.report import write_report
    from hpsearch.tracking import read_study

    files = write_report(read_study(args.experiment, args.tracking_uri), args.out)
    for path in files:
        console.print(str(path), highlight=False, soft_wrap=True)
    if not files:
        err_console.print(f"nothing to draw for {args.experiment!r}: no trial recorded a curve or a score")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from hpsearch.sync import offline_uri, sync_experiment

    study = load_study(args.study, args.overrides)
    target = args.target or study.tracking.resolved_uri()
    report = sync_experiment(study.experiment_name, args.source or offline_uri(), target)
    console.print(f"synced experiment {study.experiment_name!r} to {mask_credentials(target)} "
                  f"(experiment {report.experiment_id}): {report.copied} run(s) copied, "
                  f"{report.skipped} already there, "
                  f"{report.versions} model version(s) registered", soft_wrap=True, highlight=False)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", args.backend_store_uri,
               "--host", args.host, "--port", str(args.port)]
    console.print(f"MLflow UI on http://{args.host}:{args.port} (Ctrl-C to stop)")
    sys.stdout.flush()
    os.execv(sys.executable, command)  # become the UI process: stopping hpsearch stops the UI, no orphan


COMMANDS = {"run": cmd_run, "worker": cmd_worker, "check": cmd_check, "lr-find": cmd_lr_find, "best": cmd_best,
            "report": cmd_report, "sync": cmd_sync, "ui": cmd_ui}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hpsearch`` and ``python -m hpsearch``; returns the exit code."""
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # a recycled worker starts itself again with these
    if not sys.warnoptions:  # libraries' deprecation notices are not the user's concern (python -W shows them)
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning))
    try:
        return COMMANDS[args.command](args)
    except HpsearchError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted: open MLflow runs were closed as KILLED; run the same command again "
                          "to start over (optuna studies resume where they stopped)")
        return 130
