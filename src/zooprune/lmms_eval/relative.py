"""Relative performance of pruned runs against the unpruned run, from lmms-eval results files.

The paper's tables report, per budget, the mean over benchmarks of 100 * pruned / unpruned.
Usage::

    python -m zooprune.lmms_eval.relative runs/none runs/zoo-192 runs/zoo-128 runs/zoo-64

Each argument is an lmms-eval ``--output_path`` folder (its ``*_results.json`` files are merged,
newest last) or a results file; the first is the unpruned baseline.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

#: the headline metric of each benchmark of the paper's LLaVA-1.5 table, as lmms-eval 0.7 names it.
HEADLINE_METRICS: dict[str, str] = {
    "gqa": "exact_match,none",
    "mmbench_en_dev": "gpt_eval_score,none",
    "mme": "mme_perception_score,none",
    "pope": "pope_accuracy,none",
    "scienceqa_img": "exact_match,none",
    "textvqa_val": "exact_match,none",
    "mmmu_val": "mmmu_acc,none",
    "seedbench": "seed_image,none",
    "vqav2_val": "exact_match,none",
}


def load_scores(path: str | Path) -> dict[str, float]:
    """Headline scores by task from one results file or every ``*_results.json`` under a folder."""
    p = Path(path)
    files = sorted(p.rglob("*_results.json"), key=lambda f: f.stat().st_mtime) if p.is_dir() else [p]
    if not files:
        raise FileNotFoundError(f"no lmms-eval results file under {p}")
    scores: dict[str, float] = {}
    for file in files:
        results = json.loads(file.read_text()).get("results", {})
        for task, metric in HEADLINE_METRICS.items():
            value = results.get(task, {}).get(metric)
            if isinstance(value, (int, float)):
                scores[task] = float(value)
    return scores


def relative(base: Mapping[str, float], pruned: Mapping[str, float]) -> dict[str, float]:
    """100 * pruned / base for every task both have (a zero baseline is skipped)."""
    return {t: 100.0 * pruned[t] / base[t] for t in HEADLINE_METRICS if t in base and t in pruned and base[t]}


def table(base_path: str, pruned_paths: Sequence[str]) -> str:
    """Markdown: absolute scores of every run, then relative scores and their average."""
    base = load_scores(base_path)
    runs = [(p, load_scores(p)) for p in pruned_paths]
    tasks = [t for t in HEADLINE_METRICS if t in base]
    lines = ["| run | " + " | ".join(tasks) + " | avg. relative (%) |", "|---" * (len(tasks) + 2) + "|"]
    lines.append(f"| {base_path} | " + " | ".join(f"{base[t]:.4g}" for t in tasks) + " | 100.0 |")
    for path, scores in runs:
        rel = relative(base, scores)
        cells = [f"{scores[t]:.4g} ({rel[t]:.1f}%)" if t in rel else "-" for t in tasks]
        avg = sum(rel.values()) / len(rel) if rel else float("nan")
        lines.append(f"| {path} | " + " | ".join(cells) + f" | {avg:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", help="results of the unpruned run (method=none)")
    parser.add_argument("pruned", nargs="+", help="results of pruned runs")
    args = parser.parse_args(argv)
    print(table(args.baseline, args.pruned))


if __name__ == "__main__":
    main()
