"""The headline's figures and anytime curves, made from the raw JSON files alone.

    python benchmarks/summarize.py [--results benchmarks/results/headline] [--write-results-md]

Prints the table; ``--write-results-md`` also puts it in benchmarks/RESULTS.md between the ``headline`` markers
(and the ablation's, from ``benchmarks/results/ablation/``, between the ``ablation`` ones) and redraws
``benchmarks/anytime.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Figure, check, markdown, table

HERE = Path(__file__).resolve().parent
TARGETS = {60.0: 0.285, 300.0: 0.275}
CHAPTER_RATIO = 0.05


def load_rows(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]


def _spread(values: list[float]) -> str:
    return f"{min(values):.4f}-{max(values):.4f}, n={len(values)}"


def figures_of(rows: list[dict[str, Any]], by_variant: bool = False) -> list[Figure]:
    """Median delivered test MSE (and spread) per contender (``by_variant``: per ablation variant) and budget,
    and the issue's targets."""
    runs: dict[tuple[str, float | None], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if math.isfinite(row.get("test_mse", math.nan)):
            name = (f"hpsearch {row.get('variant', 'default')} (from {row.get('defaults', 'tpe-hyperband')})"
                    if by_variant else row["contender"])
            runs[name, row["budget_s"]].append(row)
    medians = {key: statistics.median(r["test_mse"] for r in found) for key, found in runs.items()}
    figures = []
    for (contender, budget), found in sorted(runs.items(), key=lambda kv: (kv[0][1] or 1e9, kv[0][0])):
        tests, walls = [r["test_mse"] for r in found], [r["wall_s"] for r in found]
        where = f"budget {budget:.0f} s" if budget else "to its end"
        target = TARGETS.get(budget) if contender == "hpsearch" else None
        figures.append(Figure("headline", f"{contender}, {where}: delivered test MSE", medians[contender, budget], "",
                              f"<= {target}" if target else "", check(medians[contender, budget], target, True)
                              if target else None,
                              note=f"median ({_spread(tests)}); whole run {statistics.median(walls):.0f} s "
                                   f"({min(walls):.0f}-{max(walls):.0f}); trials "
                                   f"{statistics.median(r['trials'] for r in found):.0f}; {found[0]['backend']}"))
    return figures if by_variant else figures + _comparisons(medians, runs)


def _comparisons(medians: dict, runs: dict) -> list[Figure]:
    figures = []
    budgets = sorted({b for (_, b) in medians if b})
    for budget in budgets:
        ours = medians.get(("hpsearch", budget), math.nan)
        rivals = {c: m for (c, b), m in medians.items() if b == budget and c != "hpsearch"}
        if rivals:
            best_rival = min(rivals, key=rivals.get)
            figures.append(Figure("headline", f"budget {budget:.0f} s: hpsearch's median minus the best rival's",
                                  ours - rivals[best_rival], "", "< 0", ours < rivals[best_rival],
                                  note=f"best rival: {best_rival} ({rivals[best_rival]:.4f})"))
    if 60.0 in budgets and 300.0 in budgets:
        rivals = {c: m for (c, b), m in medians.items() if b == 300.0 and c != "hpsearch"}
        if rivals:
            ours = medians.get(("hpsearch", 60.0), math.nan)
            best_rival = min(rivals, key=rivals.get)
            figures.append(Figure("headline", "hpsearch at 60 s minus the best rival at 300 s",
                                  ours - rivals[best_rival], "", "< 0", ours < rivals[best_rival],
                                  note=f"best rival at 300 s: {best_rival} ({rivals[best_rival]:.4f})"))
    chapter = medians.get(("chapter", None))
    if chapter is not None:
        chapter_wall = statistics.median(r["wall_s"] for r in runs["chapter", None])
        reaching = [b for b in budgets if medians.get(("hpsearch", b), math.inf) <= chapter]
        if reaching:
            wall = statistics.median(r["wall_s"] for r in runs["hpsearch", reaching[0]])
            ratio, note = wall / chapter_wall, f"budget {reaching[0]:.0f} s: {wall:.0f} s vs {chapter_wall:.0f} s"
        else:
            ratio, note = math.nan, "no budget's median reached the chapter's median test MSE"
        figures.append(Figure("headline", "time to the chapter's median test MSE / the chapter's wall time", ratio,
                              "x", f"<= {CHAPTER_RATIO}", check(ratio, CHAPTER_RATIO, True),
                              note=f"end to end, medians; {note}; chapter median test MSE {chapter:.4f}"))
    return figures


def plot_anytime(rows: list[dict[str, Any]], path: Path) -> None:
    """Test MSE of the model each contender would hand over, against wall time: one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"hpsearch": "tab:blue", "optuna": "tab:orange", "keras_tuner": "tab:green", "chapter": "tab:red"}
    figure, axes = plt.subplots(figsize=(9, 5.5))
    labelled = set()
    for row in rows:
        points = [p for p in row["timeline"] if math.isfinite(p["test_mse"])]
        if not points:
            continue
        name = row["contender"]
        label = None if name in labelled else name
        labelled.add(name)
        style = "--" if (row["budget_s"] or 0) >= 300 else "-"
        if name == "chapter":
            axes.plot([points[-1]["t"]], [points[-1]["test_mse"]], "o", color=colours[name], label=label)
            continue
        axes.step([p["t"] for p in points], [p["test_mse"] for p in points], where="post", linestyle=style,
                  color=colours.get(name, "grey"), alpha=0.6, label=label)
        axes.plot([points[-1]["t"]], [points[-1]["test_mse"]], "s", color=colours.get(name, "grey"), ms=4)
    axes.set_xscale("log")
    axes.set_xlabel("wall time since the start (s, log); squares: the delivered model; dashed: 300 s budgets")
    axes.set_ylabel("test MSE of the model it would hand over (lower is better)")
    axes.set_title("Anytime: the chapter's California search, each tool as its users write it")
    axes.set_ylim(0.25, 0.52)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _provenance(rows: list[dict[str, Any]], folder: str) -> str:
    commits = sorted({r["commit"] for r in rows})
    dates = sorted(r["date"] for r in rows)
    return (f"Generated by `python benchmarks/summarize.py --write-results-md` from {len(rows)} runs in "
            f"`benchmarks/results/{folder}/` (commits {', '.join(commits)}; {dates[0]} to {dates[-1]}; "
            f"{rows[0]['machine']}).")


def _replace_block(text: str, name: str, heading: str, body: str) -> str:
    """``text`` with the block between ``name``'s markers set to ``body`` (added before "## Rerun" if absent)."""
    start, end = f"<!-- {name}:start (summarize.py writes this part) -->", f"<!-- {name}:end -->"
    block = f"{start}\n\n{body}\n\n{end}"
    if start in text:
        return text[:text.index(start)] + block + text[text.index(end) + len(end):]
    return text.replace("## Rerun", f"## {heading}\n\n{block}\n\n## Rerun", 1)


def write_results_md(figures: list[Figure], rows: list[dict[str, Any]], ablation: list[dict[str, Any]]) -> None:
    """The headline table and, when its runs exist, the ablation's (one change at a time from the defaults)."""
    path = HERE / "RESULTS.md"
    text = _replace_block(path.read_text(encoding="utf-8"), "headline", "Headline (issue #21)",
                          f"{_provenance(rows, 'headline')} Anytime curves: [anytime.png](anytime.png).\n\n"
                          f"{markdown(figures)}")
    if ablation:
        text = _replace_block(text, "ablation", "Ablation (issue #21)",
                              f"{_provenance(ablation, 'ablation')}\n\n"
                              f"{markdown(figures_of(ablation, by_variant=True))}")
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(HERE / "results" / "headline"))
    parser.add_argument("--write-results-md", action="store_true")
    args = parser.parse_args()
    rows = load_rows(Path(args.results))
    figures = figures_of(rows)
    print(table(figures))
    if args.write_results_md:
        write_results_md(figures, rows, load_rows(HERE / "results" / "ablation"))
        plot_anytime(rows, HERE / "anytime.png")


if __name__ == "__main__":
    main()
