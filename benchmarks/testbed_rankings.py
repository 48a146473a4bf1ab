"""Compare the method rankings of two `zooprune eval` results (e.g. testbed v1 and v2).

    python benchmarks/testbed_rankings.py A.json B.json --names v1,v2 --out rankings.md

For every budget both results hold: each method's overall accuracy [95 % Wilson interval] on
each model, its rank, and the Spearman correlation of the two models' method accuracies (scipy).
Then the paired verdicts against each reference method both results were compared with
(``+`` / ``-``: the paired-bootstrap interval of the difference excludes 0; ``n.d.``: it does
not), and whether the verdict holds on both models, on one only, or on neither.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from scipy.stats import spearmanr

from zooprune.eval.report import reference_comparisons


def load(path: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(method, keep): summary}`` of a `zooprune eval` results JSON."""
    return {(s["method"], s["keep"]): s for s in json.loads(Path(path).read_text())["results"]}


def verdict(comparison: dict[str, Any] | None) -> str:
    """``+`` / ``-`` where the paired interval excludes 0, ``n.d.`` where it does not, ``.`` if absent."""
    if not comparison:
        return "."
    if not comparison["distinguishable"]:
        return "n.d."
    return "+" if comparison["difference"] > 0 else "-"


def cell(s: dict[str, Any]) -> str:
    low, high = s["ci95"]
    return f"{100 * s['accuracy']:.1f} [{100 * low:.0f}, {100 * high:.0f}]"


def rank(accuracies: list[float], value: float) -> int:
    """1 + how many accuracies beat ``value`` (ties share a rank)."""
    return 1 + sum(x > value for x in accuracies)


def compare(a: dict, b: dict, names: tuple[str, str]) -> str:
    budgets = sorted(
        {k for m, k in a if m != "none"} & {k for m, k in b if m != "none"}, key=float, reverse=True
    )
    lines = [f"# Method rankings: {names[0]} vs {names[1]}", ""]
    agree: dict[str, int] = {"both": 0, "one": 0, "opposite": 0, "neither": 0}
    verdict_rows = []
    for keep in budgets:
        methods = sorted({m for m, k in a if k == keep} & {m for m, k in b if k == keep})
        acc_a = [a[(m, keep)]["accuracy"] for m in methods]
        acc_b = [b[(m, keep)]["accuracy"] for m in methods]
        rho = spearmanr(acc_a, acc_b).statistic if len(methods) > 2 else float("nan")

        lines += [
            f"## keep {keep}: Spearman of method accuracies {names[0]} vs {names[1]} = {rho:+.2f} ({len(methods)} methods)",
            "",
            f"| method | {names[0]} | rank | {names[1]} | rank |",
            "|---|---|---|---|---|",
        ]
        for m in sorted(methods, key=lambda m: -b[(m, keep)]["accuracy"]):
            lines.append(
                f"| {m} | {cell(a[(m, keep)])} | {rank(acc_a, acc_a[methods.index(m)])} | {cell(b[(m, keep)])} | {rank(acc_b, acc_b[methods.index(m)])} |"
            )
        lines.append("")
        for m in methods:
            refs_a, refs_b = reference_comparisons(a[(m, keep)]), reference_comparisons(b[(m, keep)])
            for ref in [r for r in refs_a if r in refs_b and r != m]:
                va, vb = verdict(refs_a[ref]), verdict(refs_b[ref])
                if "." in (va, vb):
                    continue
                if va == vb == "n.d.":
                    kind = "neither"
                elif va == vb:
                    kind = "both"
                elif {va, vb} == {"+", "-"}:
                    kind = "opposite"
                else:
                    kind = "one"
                agree[kind] += 1
                verdict_rows.append(f"| {m} | {keep} | {ref} | {va} | {vb} | {kind} |")
    lines += [
        "## Paired verdicts against each reference (same questions, same budget)",
        "",
        f"Holds on both: {agree['both']}; on one model only: {agree['one']}; opposite: {agree['opposite']}; "
        f"not distinguishable on either: {agree['neither']}.",
        "",
        f"| method | keep | vs | {names[0]} | {names[1]} | holds on |",
        "|---|---|---|---|---|---|",
        *verdict_rows,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", help="first results JSON")
    ap.add_argument("b", help="second results JSON")
    ap.add_argument("--names", default="A,B", help="comma-separated names of the two results")
    ap.add_argument("--out", default=None, help="write the markdown here too")
    args = ap.parse_args(argv)
    first, second = args.names.split(",")
    text = compare(load(args.a), load(args.b), (first, second))
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
