"""Print and plot evaluation summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def format_table(summaries: list[dict[str, Any]]) -> str:
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
    """The same table as :func:`format_table`, as GitHub markdown."""
    rows = [line.split() for line in format_table(summaries).splitlines()]
    head, body = rows[0], [r for r in rows[2:]]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(out) + "\n"


def tokens(summary: dict[str, Any]) -> float:
    """Layer-averaged visual tokens (equal to kept tokens for pre-LLM methods)."""
    return summary.get("mean_equivalent_tokens", summary["mean_kept_tokens"])


def plot_accuracy_vs_budget(summaries: list[dict[str, Any]], path: str | Path, title: str = "") -> list[Path]:
    """Accuracy (%) against mean kept visual tokens, one line per method; writes PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = list(dict.fromkeys(s["method"] for s in summaries))
    for method in methods:
        rows = sorted((s for s in summaries if s["method"] == method), key=lambda s: tokens(s))
        if method == "none":
            ax.axhline(100 * rows[0]["accuracy"], color="black", ls="--", lw=1, label="unpruned")
            continue
        ax.plot(
            [tokens(r) for r in rows],
            [100 * r["accuracy"] for r in rows],
            marker="o",
            lw=2.5 if method == "zoo" else 1.3,
            label=method,
        )
    ax.set_xscale("log")
    ax.set_xlabel("visual tokens per image, averaged over LLM layers (log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or "accuracy vs. visual-token budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    outs = [path.with_suffix(".png"), path.with_suffix(".svg")]
    for out in outs:
        fig.savefig(out, dpi=130)
    plt.close(fig)
    return outs
