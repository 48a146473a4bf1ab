"""Relative performance of pruned runs against the unpruned run, from lmms-eval results files.

The paper's tables report, per budget, the mean over benchmarks of 100 * pruned / unpruned.
Usage::

    python -m zooprune.lmms_eval.relative runs/none runs/zoo-192 runs/zoo-128 runs/zoo-64

Each argument is an lmms-eval ``--output_path`` folder (its ``*_results.json`` files are merged,
newest last) or a results file; the first is the unpruned baseline.

95 % intervals (``zooprune.eval.stats``, as in ``zooprune eval``'s tables) need the per-document
scores of lmms-eval's ``--log_samples`` files (``*_samples_<task>.jsonl``). A task's per-document
scores are used when every logged document has a numeric score for the headline metric and their
mean is the results file's score (MME's and POPE's per-document entries are dicts, so they get no
interval). Then:

- score: the Wilson interval when the scores are 0/1 (an accuracy), else none;
- relative score: the paired-bootstrap interval of ``100 * mean(pruned) / mean(unpruned)`` over
  the documents both runs scored (the same documents are required);
- ``vs unpruned``: the paired difference in points, its paired-bootstrap interval and, for 0/1
  scores, the exact McNemar p-value; ``n.d.`` (not distinguishable) when the interval contains 0;
- the average relative score: a bootstrap that resamples each task's documents on its own, when
  every task of the row has paired per-document scores.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zooprune.eval import stats
from zooprune.eval.report import NOT_DISTINGUISHABLE

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

LEGEND = (
    "score [95 % Wilson interval, 0/1 per-document scores only]; relative = 100 * pruned / unpruned "
    "[95 % paired-bootstrap interval]; vs unpruned = paired difference in points on the same documents "
    f"[95 % paired-bootstrap interval], McNemar p (0/1 scores); {NOT_DISTINGUISHABLE} = not "
    "distinguishable (the interval contains 0); no interval where lmms-eval logged no usable "
    "per-document scores (run it with --log_samples)"
)


@dataclass(frozen=True)
class TaskScore:
    """A task's headline score and, when logged and consistent, its per-document scores."""

    value: float
    per_doc: dict[str, float] | None = None

    @property
    def binary(self) -> bool:
        return self.per_doc is not None and all(v in (0.0, 1.0) for v in self.per_doc.values())


def _sample_scores(file: Path, metric: str) -> dict[str, float] | None:
    """Per-document values of ``metric`` (``name,filter``) in an lmms-eval samples file, or None
    when some document has no numeric value."""
    name, _, filter_name = metric.partition(",")
    scores: dict[str, float] = {}
    for line in file.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("filter", filter_name) != filter_name:
            continue
        value = row.get(name)
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        scores[str(row.get("doc_id"))] = float(value)
    return scores or None


def _samples_files(results_file: Path, task: str, folder: Path | None) -> list[Path]:
    """The samples files of ``task`` for one results file (same timestamp prefix), else, for a
    folder, all of them (newest last)."""
    prefix = results_file.name.removesuffix("_results.json")
    same_run = sorted(results_file.parent.glob(f"{prefix}_samples_{task}.jsonl"))
    if same_run or folder is None:
        return same_run
    return sorted(folder.rglob(f"*_samples_{task}.jsonl"), key=lambda f: f.stat().st_mtime)


def load_run(path: str | Path) -> dict[str, TaskScore]:
    """Headline scores by task (with per-document scores where logged) from one results file or
    every ``*_results.json`` under a folder (newest last)."""
    p = Path(path)
    files = sorted(p.rglob("*_results.json"), key=lambda f: f.stat().st_mtime) if p.is_dir() else [p]
    if not files:
        raise FileNotFoundError(f"no lmms-eval results file under {p}")
    run: dict[str, TaskScore] = {}
    for file in files:
        results = json.loads(file.read_text()).get("results", {})
        for task, metric in HEADLINE_METRICS.items():
            value = results.get(task, {}).get(metric)
            if not isinstance(value, (int, float)):
                continue
            per_doc = None
            for samples in _samples_files(file, task, p if p.is_dir() else None)[-1:]:
                per_doc = _sample_scores(samples, metric)
            if per_doc is not None and not math.isclose(
                sum(per_doc.values()) / len(per_doc), value, abs_tol=1e-9
            ):
                per_doc = None  # the per-document values are not what the headline score averages
            run[task] = TaskScore(float(value), per_doc)
    return run


def load_scores(path: str | Path) -> dict[str, float]:
    """Headline scores by task from one results file or every ``*_results.json`` under a folder."""
    return {task: score.value for task, score in load_run(path).items()}


def relative(base: Mapping[str, float], pruned: Mapping[str, float]) -> dict[str, float]:
    """100 * pruned / base for every task both have (a zero baseline is skipped)."""
    return {t: 100.0 * pruned[t] / base[t] for t in HEADLINE_METRICS if t in base and t in pruned and base[t]}


def paired_vectors(base: TaskScore, pruned: TaskScore) -> tuple[np.ndarray, np.ndarray] | None:
    """(pruned, base) per-document scores in one document order, when both runs scored the same
    documents; else None."""
    if base.per_doc is None or pruned.per_doc is None or base.per_doc.keys() != pruned.per_doc.keys():
        return None
    docs = sorted(base.per_doc, key=lambda d: (0, int(d), d) if d.isdigit() else (1, 0, d))  # lmms-eval's order
    return np.array([pruned.per_doc[d] for d in docs]), np.array([base.per_doc[d] for d in docs])


def average_relative_interval(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    resamples: int = stats.BOOTSTRAP_RESAMPLES,
    seed: int = stats.BOOTSTRAP_SEED,
    confidence: float = stats.CONFIDENCE,
) -> tuple[float, float]:
    """Percentile interval of the mean over tasks of ``100 * mean(pruned) / mean(base)``, each
    task's documents resampled (paired) on their own, ``resamples`` times (seeded)."""
    rng = np.random.default_rng(seed)
    draws = np.zeros(resamples)
    for pruned, base in pairs:
        idx = rng.integers(0, len(base), size=(resamples, len(base)))
        with np.errstate(divide="ignore", invalid="ignore"):
            draws += 100.0 * pruned[idx].mean(axis=1) / base[idx].mean(axis=1)
    draws /= len(pairs)
    tail = 100 * (1 - confidence) / 2
    low, high = np.nanpercentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def score_cell(score: TaskScore) -> str:
    """``64.7 [60.1, 69.0]`` (percent) for 0/1 scores, else the raw score (``1510``, ``0.583``)."""
    if not score.binary:
        return f"{score.value:.4g}"
    assert score.per_doc is not None
    low, high = stats.wilson_interval(int(sum(score.per_doc.values())), len(score.per_doc))
    return f"{100 * score.value:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def comparison_cell(pruned: np.ndarray, base: np.ndarray, binary: bool) -> str:
    """``-3.1 [-6.2, +0.1] p=0.06 n.d.``: the paired difference in points (McNemar p for 0/1 scores)."""
    if binary:
        c = stats.paired_comparison(pruned.astype(bool), base.astype(bool))
        diff, low, high, p = c.difference, c.low, c.high, f" p={c.mcnemar_p:.2g}"
    else:
        diff, p = float(pruned.mean() - base.mean()), ""
        low, high = stats.paired_difference_interval(pruned, base)
    cell = f"{100 * diff:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]{p}"
    return cell if not low <= 0.0 <= high else f"{cell} {NOT_DISTINGUISHABLE}"


def table(base_path: str, pruned_paths: Sequence[str]) -> str:
    """Markdown: each run's scores, relative scores and their average, and the paired differences
    against the unpruned run, with 95 % intervals where per-document scores are logged."""
    base = load_run(base_path)
    runs = [(p, load_run(p)) for p in pruned_paths]
    tasks = [t for t in HEADLINE_METRICS if t in base]

    def head(last: str | None) -> list[str]:
        cols = ["run", *tasks] + ([last] if last else [])
        return ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]

    scores = [
        "Scores:",
        "",
        *head(None),
        f"| {base_path} | " + " | ".join(score_cell(base[t]) for t in tasks) + " |",
    ]
    rel_lines = ["", "Relative to the unpruned run (%):", "", *head("avg. relative (%)")]
    rel_lines.append(f"| {base_path} | " + " | ".join("100.0" for _ in tasks) + " | 100.0 |")
    vs_lines = ["", "vs unpruned (points):", "", *head(None)]
    for path, run in runs:
        scores.append(
            f"| {path} | " + " | ".join(score_cell(run[t]) if t in run else "-" for t in tasks) + " |"
        )
        rel = relative({t: s.value for t, s in base.items()}, {t: s.value for t, s in run.items()})
        rel_cells, vs_cells, pairs = [], [], []
        for t in tasks:
            pair = paired_vectors(base[t], run[t]) if t in run else None
            if t not in rel:
                rel_cells.append("-")
            elif pair is None:
                rel_cells.append(f"{rel[t]:.1f}")
            else:
                pairs.append(pair)
                low, high = stats.paired_ratio_interval(*pair)
                rel_cells.append(f"{rel[t]:.1f} [{100 * low:.1f}, {100 * high:.1f}]")
            vs_cells.append("-" if pair is None else comparison_cell(*pair, base[t].binary and run[t].binary))
        avg = sum(rel.values()) / len(rel) if rel else float("nan")
        avg_cell = f"{avg:.2f}"
        if rel and len(pairs) == len(rel):
            low, high = average_relative_interval(pairs)
            avg_cell += f" [{low:.2f}, {high:.2f}]"
        rel_lines.append(f"| {path} | " + " | ".join(rel_cells) + f" | {avg_cell} |")
        vs_lines.append(f"| {path} | " + " | ".join(vs_cells) + " |")
    return "\n".join(scores + rel_lines + vs_lines + ["", LEGEND])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", help="results of the unpruned run (method=none)")
    parser.add_argument("pruned", nargs="+", help="results of pruned runs")
    args = parser.parse_args(argv)
    print(table(args.baseline, args.pruned))


if __name__ == "__main__":
    main()
