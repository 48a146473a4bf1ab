"""Evaluation summaries as tables (plain text and markdown); the plot is :func:`zooprune.plots.plot_accuracy_vs_budget`."""

from __future__ import annotations

from typing import Any


def accuracy_table(summaries: list[dict[str, Any]]) -> str:
    """One row per (method, budget): kept tokens, layer-averaged tokens, accuracy per family, overall,
    relative (%). Returned as aligned plain text."""
    families = sorted({f for s in summaries for f in s["per_family"]})
    head = ["method", "keep", "tokens", "equiv.", "GFLOPs"] + families + ["overall", "rel.%"]
    lines = [head]
    for s in summaries:
        rel = "-" if s["relative"] is None else f"{s['relative']:.1f}"
        lines.append(
            [
                s["method"],
                s["keep"],
                f"{s['mean_kept_tokens']:.1f}",
                f"{s.get('mean_equivalent_tokens', s['mean_kept_tokens']):.1f}",
                f"{s.get('mean_prefill_gflops', float('nan')):.3g}",
            ]
            + [f"{100 * s['per_family'].get(f, float('nan')):.1f}" for f in families]
            + [f"{100 * s['accuracy']:.1f}", rel]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = [
        "  ".join(cell.rjust(w) if i > 1 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in lines
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(summaries: list[dict[str, Any]]) -> str:
    """The same table as :func:`accuracy_table`, as GitHub markdown."""
    rows = [line.split() for line in accuracy_table(summaries).splitlines()]
    head, body = rows[0], [r for r in rows[2:]]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(out) + "\n"
