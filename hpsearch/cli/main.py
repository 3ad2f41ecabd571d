"""The command line's parser and dispatch: parse -> a command -> its exit code (2 for the user's mistakes)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from pathlib import Path
from types import FrameType

from rich.markup import escape

from hpsearch.cli.commands import (
    cmd_best,
    cmd_check,
    cmd_lr_find,
    cmd_report,
    cmd_run,
    cmd_sync,
    cmd_ui,
    cmd_worker,
    err_console,
)
from hpsearch.cli.crash import crash_summary, write_crash_log
from hpsearch.config.schema import DEFAULT_TRACKING_URI
from hpsearch.errors import HpsearchError, Terminated


def _debug_option() -> argparse.ArgumentParser:
    """``--debug``, which every command takes: an internal error's traceback on the terminal, not only in a file."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an internal error here (it always goes to a log file)")
    return common


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
    common = _debug_option()
    parser = argparse.ArgumentParser(prog="hpsearch", description="Tracked hyperparameter search for Keras models.",
                                     parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:  # noqa: A002  (argparse's own word)
        return commands.add_parser(name, parents=[common], help=help)

    run = add("run", "run a study: search, refit the best, test it, record all")
    _add_study_arguments(run)
    run.add_argument("--workers", type=int, default=1, help="worker processes sharing an Optuna study (default 1)")
    run.add_argument("--offline", action="store_true",
                     help="record in ./mlflow-offline.db without contacting the tracking server; "
                          "`sync` copies it later")
    sync = add("sync", "copy a study recorded with run --offline to the tracking server")
    _add_study_arguments(sync)
    sync.add_argument("--from", dest="source", default=None, help="default: sqlite:///mlflow-offline.db (this folder)")
    sync.add_argument("--to", dest="target", default=None,
                      help="default: the study's tracking.uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    worker = add("worker", "join a study's shared Optuna storage and run some of its trials")
    _add_study_arguments(worker)
    worker.add_argument("--threads", type=int, default=None,
                        help="TensorFlow threads of this worker (default: one per CPU it may use)")
    worker.add_argument("--cpus", type=_cpu_list, default=None, metavar="LIST",
                        help="run only on these CPUs, e.g. 0 or 2,3 or 0-3 (default: any)")
    check = add("check", "validate a study file and its data without training")
    _add_study_arguments(check)
    check.add_argument("--no-build", action="store_true",
                       help="do not build your own factory's models (once per categorical value, on a few rows)")
    lr_find = add("lr-find", "the learning-rate range test on the study's model")
    _add_study_arguments(lr_find)
    lr_find.add_argument("--start", type=float, default=1e-5, help="first learning rate (default 1e-5)")
    lr_find.add_argument("--end", type=float, default=10.0, help="last learning rate (default 10)")
    lr_find.add_argument("--iterations", type=int, default=300, help="batches, the LR growing exponentially")
    lr_find.add_argument("--out", type=Path, default=Path("."), help="folder for the plot(s) (default: here)")
    best = add("best", "print a study's best params, scores and model URIs from MLflow")
    best.add_argument("experiment", help="the study's MLflow experiment (by default the study name)")
    best.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    report = add("report", "draw a recorded study's plots (learning curves, scores, importances)")
    report.add_argument("experiment", help="the MLflow experiment (the study name unless tracking.experiment is set)")
    report.add_argument("--out", type=Path, default=Path("report"), help="folder for the PNGs (default: ./report)")
    report.add_argument("--html", action="store_true",
                        help="also the interactive report.html (Optuna's and plotly's figures; opens offline)")
    report.add_argument("--tracking-uri", default=None, help=f"default: $MLFLOW_TRACKING_URI or {DEFAULT_TRACKING_URI}")
    ui = add("ui", "open the MLflow UI on what the runs recorded")
    ui.add_argument("--backend-store-uri", default=DEFAULT_TRACKING_URI, help=f"default: {DEFAULT_TRACKING_URI}")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--no-browser", action="store_true", help="do not open the UI in a browser once it is up")
    return parser


COMMANDS = {"run": cmd_run, "worker": cmd_worker, "check": cmd_check, "lr-find": cmd_lr_find, "best": cmd_best,
            "report": cmd_report, "sync": cmd_sync, "ui": cmd_ui}


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hpsearch`` and ``python -m hpsearch``; returns the exit code."""
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # a recycled worker starts itself again with these
    if not sys.warnoptions:  # libraries' deprecation notices are not the user's concern (python -W shows them)
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning))
    main_thread = threading.current_thread() is threading.main_thread()  # only there can Python take signals
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None  # docker compose stop, systemd
    try:
        return COMMANDS[args.command](args)
    except HpsearchError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        err_console.print(f"{what}: open MLflow runs were closed as KILLED; run the same command again "
                          "to start over (optuna studies resume where they stopped)")
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:  # a bug of hpsearch's (or a library's): one paragraph, the traceback in a file
        if getattr(args, "debug", False):
            raise
        log = write_crash_log(exc, args.argv)
        err_console.print(f"[red]internal error in hpsearch:[/red] {escape(crash_summary(exc))}; the details are in "
                          f"{escape(str(log))} (or run again with --debug to see them here); please report it",
                          highlight=False, soft_wrap=True)
        return 1
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
