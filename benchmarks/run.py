"""Run the benchmark suite: each benchmark in its own child process, one after another, then one table.

    python benchmarks/run.py [--quick] [--only NAME ...] [--out RESULTS_TABLE.md] [--data cal_housing.csv]

Prints every measured figure, ratio and PASS/MISS against the issue's targets; ``--out`` writes the markdown
table (paste it into benchmarks/RESULTS.md). ``--quick`` (a few minutes) shrinks rows, epochs and trials: its
figures are indicative only.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, Figure, data_file, load_json, markdown, table

BENCHMARKS = ("headline", "tracking_overhead", "trial_overhead", "memory", "parallel_scaling", "backends",
              "final_model")
HERE = Path(__file__).resolve().parent


def machine() -> str:
    import os

    return f"{platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, " \
           f"Python {platform.python_version()}"


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--quick", action="store_true", help="small sizes: minutes, indicative figures only")
    args.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), metavar="NAME",
                      help=f"benchmarks to run ({', '.join(BENCHMARKS)})")
    args.add_argument("--out", default=None, help="write the markdown table of the figures to this file")
    args.add_argument("--data", default=None, help=f"the raw StatLib cal_housing.csv (default {DEFAULT_DATA})")
    options = args.parse_args()
    data = data_file(options.data)
    figures: list[Figure] = []
    durations: dict[str, float] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hpsearch-bench-") as folder:
        for name in options.only:
            out = Path(folder) / f"{name}.json"
            command = [sys.executable, str(HERE / f"{name}.py"), "--data", str(data), "--json", str(out)]
            command += ["--quick"] if options.quick else []
            print(f"== {name}", flush=True)
            began = time.perf_counter()
            code = subprocess.run(command, check=False).returncode
            durations[name] = time.perf_counter() - began
            if code != 0 or not out.exists():
                figures.append(Figure(name, "benchmark failed", float("nan"), note=f"exit code {code}"))
                continue
            figures.extend(load_json(out))
    total = time.perf_counter() - started
    mode = "--quick (indicative only)" if options.quick else "full"
    print(f"\n{mode} run, {total / 60:.1f} min on {machine()}")
    print(", ".join(f"{name} {seconds:.0f} s" for name, seconds in durations.items()))
    print(table(figures))
    if options.out:
        header = f"Mode: {mode}; {total / 60:.1f} min on {machine()}.\n\n"
        Path(options.out).write_text(header + markdown(figures) + "\n", encoding="utf-8")
        print(f"markdown table written to {options.out}")
    return 0 if all(f.name != "benchmark failed" for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
