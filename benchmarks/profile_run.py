"""Profile a typical hpsearch run with pyinstrument: the tiny study of benchmark 3 (20 short trials, local MLflow).

    python benchmarks/profile_run.py [--data cal_housing.csv] [--trials 20] [--html profile.html]

Prints pyinstrument's call tree (collapsed below 2 % of the time) so the costs around the Keras fits are visible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, as_study, data_file, scratch, tiny_raw


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--data", default=None, help=f"the raw StatLib cal_housing.csv (default {DEFAULT_DATA})")
    args.add_argument("--trials", type=int, default=20)
    args.add_argument("--html", default=None, help="also write pyinstrument's HTML report here")
    options = args.parse_args()
    data = data_file(options.data)
    from pyinstrument import Profiler

    import hpsearch.models.backend  # noqa: F401  (TensorFlow's import is not what we profile)
    from hpsearch.run.study import run_study

    with scratch("profile") as workdir:
        study, text = as_study(tiny_raw(data, workdir, "bench-profile", [f"search.n_trials={options.trials}"]))
        with Profiler(interval=0.005) as profiler:
            run_study(study, text)
    print(profiler.output_text(unicode=False, color=False, show_all=False, time="percent_of_total"))
    if options.html:
        Path(options.html).write_text(profiler.output_html(), encoding="utf-8")


if __name__ == "__main__":
    main()
