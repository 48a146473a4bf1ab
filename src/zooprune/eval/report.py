"""Evaluation summaries as tables (plain text and markdown), with 95 % intervals and paired comparisons.

The plot is :func:`zooprune.plots.plot_accuracy_vs_budget`. Every accuracy carries its Wilson
interval; ``vs none`` / ``vs <reference>`` (one column per reference method) are paired
differences on the same questions with their paired-bootstrap intervals, marked ``n.d.`` (not
distinguishable) where the interval contains 0.
"""

from __future__ import annotations

from typing import Any

NOT_DISTINGUISHABLE = "n.d."
LEGEND = (
    "accuracy in % [95 % Wilson interval]; vs = paired difference in points on the same questions "
    f"[95 % paired-bootstrap interval], McNemar p; {NOT_DISTINGUISHABLE} = not distinguishable "
    "(the interval contains 0)"
)


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def with_interval(value: float, ci: list[float] | None) -> str:
    """``64.7 [60.1, 69.0]`` (percent)."""
    return pct(value) if not ci else f"{pct(value)} [{pct(ci[0])}, {pct(ci[1])}]"


def comparison_cell(comparison: dict[str, Any] | None) -> str:
    """``-3.1 [-6.2, +0.1] p=0.06 n.d.``, or ``-`` when there is nothing to compare with."""
    if not comparison:
        return "-"
    low, high = comparison["ci95"]
    cell = f"{100 * comparison['difference']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] p={comparison['mcnemar_p']:.2g}"
    return cell if comparison["distinguishable"] else f"{cell} {NOT_DISTINGUISHABLE}"


def reference_comparisons(summary: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """``{reference method: comparison}`` of a summary; JSON written before several references
    were allowed holds one ``reference`` / ``vs_reference`` pair instead."""
    if "vs_references" in summary:
        return {ref: summary["vs_references"].get(ref) for ref in summary.get("references", [])}
    ref = summary.get("reference")
    return {ref: summary.get("vs_reference")} if ref else {}


def table_rows(summaries: list[dict[str, Any]]) -> list[list[str]]:
    """Header + one row per (method, budget): tokens, accuracy per family and overall with intervals,
    relative (%), and the paired comparisons."""
    families = sorted({f for s in summaries for f in s["per_family"]})
    references = next((list(reference_comparisons(s)) for s in summaries if reference_comparisons(s)), [])
    head = ["method", "keep", "tokens", "equiv.", "GFLOPs"] + families + ["overall", "rel.%", "vs none"]
    head += [f"vs {ref}" for ref in references]
    rows = [head]
    for s in summaries:
        family_ci = s.get("per_family_ci95", {})
        row = [
            s["method"],
            s["keep"],
            f"{s['mean_kept_tokens']:.1f}",
            f"{s.get('mean_equivalent_tokens', s['mean_kept_tokens']):.1f}",
            f"{s.get('mean_prefill_gflops', float('nan')):.3g}",
        ]
        row += [
            with_interval(s["per_family"][f], family_ci.get(f)) if f in s["per_family"] else "-"
            for f in families
        ]
        row += [
            with_interval(s["accuracy"], s.get("ci95")),
            "-" if s["relative"] is None else f"{s['relative']:.1f}",
            comparison_cell(s.get("vs_unpruned")),
        ]
        row += [comparison_cell(reference_comparisons(s).get(ref)) for ref in references]
        rows.append(row)
    return rows


def accuracy_table(summaries: list[dict[str, Any]]) -> str:
    """The table as aligned plain text, with the legend under it."""
    rows = table_rows(summaries)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = [
        "  ".join(cell.rjust(w) if i > 1 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out + ["", LEGEND])


def markdown_table(summaries: list[dict[str, Any]]) -> str:
    """The same table as :func:`accuracy_table`, as GitHub markdown."""
    head, *body = table_rows(summaries)
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(out + ["", LEGEND]) + "\n"
