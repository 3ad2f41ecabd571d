"""The headline: the model each tool hands its user, under the same search budget, seed by seed.

Every run is one fresh process (``contenders.py``) writing one JSON file to ``benchmarks/results/headline/``.
Budgets 30 s (the shortest, for the ratio to the chapter's wall time), 60 s and 300 s; seeds 1-3 (``--seeds``;
``--first-seed`` adds seeds later), the contenders interleaved seed by seed in an order rotated per seed; and the
chapter's own search to its end (3 seeds, 13-16 min each here, after the first budget). ``--quick``: a 20 s
budget, 1 seed, no chapter run, results in a temporary folder (indicative only). The figures and the anytime PNG
are made from the JSON files by ``summarize.py`` (also run alone to redraw them). ``--ablation``: hpsearch with
one change at a time from its defaults instead, at the last budget.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, Figure, data_file, save_json, table
from summarize import figures_of, load_rows, plot_anytime

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "headline"
BUDGETED = ("hpsearch", "optuna", "keras_tuner")
# One change at a time from what a study gets by default (issue 21's ablation); run with --ablation.
ABLATION = {"default": [], "backend=tensorflow": ["training.backend=tensorflow"],
            "steps_per_execution=1": ["training.steps_per_execution=1"], "cv=3": ["search.cv=3"],
            "pruner=none": ["search.pruner=none"], "pruner=median": ["search.pruner=median"],
            "pruner=hyperband": ["search.pruner=hyperband"],
            "sampler=random": ["search.sampler=random"],
            "final=best_trial": ["search.final=best_trial"], "final=refit": ["search.final=refit"]}


def schedule(budgets: list[float], seeds: list[int], chapter_seeds: list[int],
             contenders: tuple[str, ...] = BUDGETED) -> list[tuple[str, float, int]]:
    """(contender, budget, seed) in running order: per budget and seed every contender once, rotated; the
    chapter's runs after the first budget's (a run cut short still has the ratio's denominator)."""
    runs = []
    for budget in budgets:
        for k, seed in enumerate(seeds):
            order = contenders[k % len(contenders):] + contenders[:k % len(contenders)]
            runs += [(contender, budget, seed) for contender in order]
        if budget == budgets[0]:
            runs += [("chapter", 0, seed) for seed in chapter_seeds]
    return runs


# What "default" means in the ablation's runs (recorded with each, and in its file name): the defaults changed
# after session 16's runs, which were made on Optuna TPE + Hyperband (rows without the field).
DEFAULTS = "tpe-no-pruning"


def run_one(contender: str, budget: float, seed: int, data: Path, folder: Path, variant: str = "") -> Path:
    label = f"-{variant}@{DEFAULTS}" if variant else ""
    out = folder / f"{contender}{label}-{budget:.0f}s-seed{seed}.json"
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}  # each tool on its own default backend
    command = [sys.executable, str(HERE / "contenders.py"), contender, "--budget", str(budget), "--seed",
               str(seed), "--data", str(data), "--out", str(out)]
    command += [a for override in ABLATION.get(variant, []) for a in ("--set", override)]
    done = subprocess.run(command, env=env, check=False)
    if done.returncode != 0:
        print(f"  {contender} {budget:.0f}s seed {seed} failed (exit {done.returncode})", flush=True)
    elif variant:
        out.write_text(json.dumps({**json.loads(out.read_text()), "defaults": DEFAULTS}, indent=1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one 20 s budget, 1 seed, no chapter run")
    parser.add_argument("--budgets", type=float, nargs="+", default=None)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per contender and budget")
    parser.add_argument("--first-seed", type=int, default=1, help="seeds run from this one (to add seeds later)")
    parser.add_argument("--chapter-seeds", type=int, default=3)
    parser.add_argument("--data", default=None, help=f"the raw StatLib cal_housing.csv (default {DEFAULT_DATA})")
    parser.add_argument("--results", default=None,
                        help=f"the folder of the JSON files (default {RESULTS}; --quick: a temporary one)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file (run.py)")
    parser.add_argument("--contenders", nargs="+", choices=BUDGETED, default=list(BUDGETED),
                        help="only these budgeted contenders (to rerun one after a change of its defaults)")
    parser.add_argument("--ablation", action="store_true",
                        help="instead: hpsearch with one change at a time, at the last budget (default 300 s)")
    parser.add_argument("--variants", nargs="+", choices=list(ABLATION), default=list(ABLATION),
                        help="--ablation: only these variants")
    args = parser.parse_args()
    data = data_file(args.data)
    budgets = args.budgets or ([20.0] if args.quick else [30.0, 60.0, 300.0])
    seeds = list(range(args.first_seed, args.first_seed + (1 if args.quick else args.seeds)))
    chapter = [] if args.quick else list(range(1, 1 + args.chapter_seeds))
    folder = Path(args.results or (tempfile.mkdtemp(prefix="hpsearch-headline-") if args.quick else RESULTS))
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.ablation:
        folder = folder.parent / "ablation"
        folder.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            for variant in args.variants:
                print(f"== hpsearch {variant} budget {budgets[-1]:.0f} s seed {seed}", flush=True)
                run_one("hpsearch", budgets[-1], seed, data, folder, variant)
        print(table(figures_of(load_rows(folder), by_variant=True)))
        return
    for contender, budget, seed in schedule(budgets, seeds, chapter, tuple(args.contenders)):
        print(f"== {contender} budget {budget:.0f} s seed {seed}", flush=True)
        run_one(contender, budget, seed, data, folder)
    rows = load_rows(folder)
    figures: list[Figure] = figures_of(rows)
    plot_anytime(rows, folder / "anytime.png" if args.quick else HERE / "anytime.png")
    print(f"\nheadline: {time.perf_counter() - started:.0f} s")
    print(table(figures))
    if args.json:
        save_json(figures, Path(args.json))


if __name__ == "__main__":
    main()
