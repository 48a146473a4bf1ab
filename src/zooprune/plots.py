"""Every chart of eval and bench results, and the matplotlib set-up they share.

* :func:`plot_accuracy_vs_budget`: accuracy against layer-averaged visual tokens (``zooprune eval``),
* :func:`plot_accuracy_vs`: accuracy against any per-summary number (prefill ms, TTFT, GFLOPs),
* :func:`plot_prefill_vs_budget`: bench prefill time against kept tokens,
* :func:`plot_bench`: bench time-to-first-token breakdown and speed-ups (``zooprune bench``),
* :func:`plot_batch`: bench images/s and TTFT against batch size (``zooprune bench --batch``),
* :func:`plot_results`: every figure a set of eval / bench JSON files supports (``zooprune plot``).

matplotlib is imported on call (Agg backend), so importing this module stays cheap. The
figures of pruned images (overlays, heatmaps) live in :mod:`zooprune.viz` and save through
:func:`save` too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .results import Results, read_results, unpruned, with_time_ms

#: Bench phases that accuracy is plotted against, and their axis labels.
TIME_AXES = {"prefill": "prefill time", "ttft": "time to first token"}
#: Size (inches) and resolution of the line charts: 910 x 585 pixels.
LINE_FIGSIZE = (7, 4.5)
LINE_DPI = 130
#: The method drawn with a thick line (the paper's); others get a thin one.
HIGHLIGHT = "zoo"


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, outs: list[Path], dpi: float | None = None) -> list[Path]:
    """Write ``fig`` to every path in ``outs`` (format from the suffix; folders made), close it,
    return ``outs``. ``dpi=None`` keeps the figure's own."""
    for out in outs:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, **({} if dpi is None else {"dpi": dpi}))
    pyplot().close(fig)
    return outs


def line_axes(title: str) -> tuple[Any, Any]:
    """A new line-chart figure (7 x 4.5 in) with ``title`` and a light grid."""
    fig, ax = pyplot().subplots(figsize=LINE_FIGSIZE)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig, ax


def save_line_chart(fig: Any, ax: Any, xlabel: str, ylabel: str, path: str | Path) -> list[Path]:
    """Label the axes, add the legend and write ``path`` as PNG and SVG; returns both paths."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path = Path(path)
    return save(fig, [path.with_suffix(".png"), path.with_suffix(".svg")], dpi=LINE_DPI)


def line_width(method: str, highlight: str) -> float:
    """Thick for the ``highlight`` method, thin for the rest."""
    return 2.5 if method == highlight else 1.3


def layer_averaged_tokens(summary: dict[str, Any]) -> float:
    """Visual tokens averaged over LLM layers (equal to kept tokens for pre-LLM methods)."""
    return summary.get("mean_equivalent_tokens", summary["mean_kept_tokens"])


def plot_accuracy_vs_budget(
    summaries: list[dict[str, Any]], path: str | Path, title: str = "", highlight: str = HIGHLIGHT
) -> list[Path]:
    """Accuracy (%) against mean visual tokens (log scale), one line per method with its 95 %
    interval as a band (when the summaries carry ``ci95``); the unpruned model is a dashed line with
    its band. Writes PNG and SVG; returns their paths."""
    fig, ax = line_axes(title or "accuracy vs. visual-token budget")
    for method in dict.fromkeys(s["method"] for s in summaries):
        rows = sorted((s for s in summaries if s["method"] == method), key=layer_averaged_tokens)
        bands = [r.get("ci95") for r in rows]
        if unpruned(method):
            ax.axhline(100 * rows[0]["accuracy"], color="black", ls="--", lw=1, label="unpruned")
            if bands[0]:
                ax.axhspan(100 * bands[0][0], 100 * bands[0][1], color="black", alpha=0.08, lw=0)
            continue
        xs = [layer_averaged_tokens(r) for r in rows]
        (line,) = ax.plot(
            xs, [100 * r["accuracy"] for r in rows], marker="o", lw=line_width(method, highlight), label=method
        )
        if all(bands):
            low, high = [100 * b[0] for b in bands], [100 * b[1] for b in bands]
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xscale("log")
    xlabel = "visual tokens per image, averaged over LLM layers (log scale)"
    return save_line_chart(fig, ax, xlabel, "accuracy (%)", path)


def plot_accuracy_vs(
    rows: list[dict[str, Any]], x: str, xlabel: str, path: str | Path, title: str, highlight: str = HIGHLIGHT
) -> list[Path]:
    """Accuracy (%) against ``row[x]``, one line per method (budgets joined in order of ``x``);
    the unpruned model is a black star. Writes PNG and SVG; returns their paths."""
    fig, ax = line_axes(title)
    for method in dict.fromkeys(r["method"] for r in rows):
        points = sorted((r for r in rows if r["method"] == method), key=lambda r: r[x])
        xs, ys = [r[x] for r in points], [100 * r["accuracy"] for r in points]
        if unpruned(method):
            ax.scatter(xs, ys, marker="*", s=160, color="black", zorder=3, label="unpruned")
        else:
            ax.plot(xs, ys, marker="o", lw=line_width(method, highlight), label=method)
    return save_line_chart(fig, ax, xlabel, "accuracy (%)", path)


def plot_prefill_vs_budget(rows: list[dict[str, Any]], path: str | Path, title: str) -> list[Path]:
    """Median prefill ms against kept visual tokens, one line per bench case family (method and
    estimator); the unpruned model as a dashed line. Writes PNG and SVG."""
    fig, ax = line_axes(title)
    families: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        name = row["method"] if row.get("estimator") is None else f"{row['method']}/{row['estimator']}"
        families.setdefault(name, []).append(row)
    for name, group in families.items():
        group = sorted(group, key=lambda r: r["kept_tokens"])
        if unpruned(group[0]["method"]):
            ax.axhline(group[0]["ms"]["prefill"], color="black", ls="--", lw=1, label="unpruned")
            continue
        ax.plot(
            [r["kept_tokens"] for r in group], [r["ms"]["prefill"] for r in group], marker="o", label=name
        )
    return save_line_chart(fig, ax, "visual tokens kept per image", "prefill (ms, median)", path)


def plot_bench(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Two panels: stacked time-to-first-token (encode / score / select / prefill / other) per case,
    and measured prefill speed-up next to the FLOPs bound. Writes a PNG; returns its path."""
    labels = [r["label"] for r in rows]
    parts = ("encode", "score", "select", "prefill")
    fig, (ax1, ax2) = pyplot().subplots(1, 2, figsize=(13, 0.6 * len(rows) + 2.5))
    left = [0.0] * len(rows)
    for part in parts:
        values = [r["ms"][part] for r in rows]
        ax1.barh(labels, values, left=left, label=part)
        left = [a + b for a, b in zip(left, values)]
    other = [max(0.0, r["ms"]["ttft"] - lf) for r, lf in zip(rows, left)]
    ax1.barh(labels, other, left=left, label="other (processor, splice)", color="lightgrey")
    ax1.set_xlabel("time to first token (ms, median)")
    ax1.invert_yaxis()
    ax1.legend(fontsize=8)
    y = range(len(rows))
    ax2.barh([i - 0.2 for i in y], [r["flops_bound_speedup"] for r in rows], height=0.4, label="FLOPs bound")
    ax2.barh(
        [i + 0.2 for i in y], [r["speedup"]["prefill"] for r in rows], height=0.4, label="measured prefill"
    )
    ax2.set_yticks(list(y))
    ax2.set_yticklabels(labels)
    ax2.invert_yaxis()
    ax2.set_xlabel("speed-up vs unpruned (x)")
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    [out] = save(fig, [Path(path)], dpi=110)
    return out


def plot_batch(entries: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """``zooprune bench --batch``: images/s and mean time to first token against batch size, one
    line per case (the unpruned model dashed). Writes a PNG; returns its path."""
    fig, (ax1, ax2) = pyplot().subplots(1, 2, figsize=(11, 4.2))
    for entry in entries:
        sizes = sorted(entry["batch"], key=int)
        style = {"ls": "--", "color": "black"} if unpruned(entry["method"]) else {}
        xs = [int(b) for b in sizes]
        ax1.plot(xs, [entry["batch"][b]["images_per_s"] for b in sizes], marker="o", label=entry["label"], **style)
        ax2.plot(xs, [entry["batch"][b]["mean_ttft_ms"] for b in sizes], marker="o", label=entry["label"], **style)
    for ax, ylabel in ((ax1, "images / s (median)"), (ax2, "time to first token, ms (mean per image)")):
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    [out] = save(fig, [Path(path)], dpi=110)
    return out


def plot_results(
    paths: list[str | Path], out: str | Path, title: str = "", results: Results | None = None
) -> list[Path]:
    """Every figure the files support, named ``<out>_<figure>.png`` / ``.svg``; returns the paths.

    * accuracy vs budget (eval results),
    * accuracy vs prefill time and vs time to first token (eval results with those times, e.g.
      joined with bench results; TTFT adds vision encoding, scoring and selection to the prefill),
    * accuracy vs prefill GFLOPs (eval results with ``mean_prefill_gflops``),
    * prefill time vs budget (bench results).
    """
    results = results if results is not None else read_results(paths)
    base = Path(out)
    base = base.with_name(base.stem) if base.suffix in (".png", ".svg") else base
    written: list[Path] = []
    if results.summaries:
        written += plot_accuracy_vs_budget(results.summaries, f"{base}_accuracy_vs_budget", title=title)
        for phase, label in TIME_AXES.items():
            timed = with_time_ms(results, phase)
            if timed:
                written += plot_accuracy_vs(
                    timed, f"{phase}_ms", f"{label} (ms, median)", f"{base}_accuracy_vs_{phase}",
                    title or f"accuracy vs. {label}",
                )  # fmt: skip
        flops = [s for s in results.summaries if s.get("mean_prefill_gflops")]
        if flops:
            written += plot_accuracy_vs(
                flops, "mean_prefill_gflops", "prefill GFLOPs per question", f"{base}_accuracy_vs_flops",
                title or "accuracy vs. prefill FLOPs",
            )  # fmt: skip
    if results.bench_rows:
        written += plot_prefill_vs_budget(
            results.bench_rows, f"{base}_prefill_vs_budget", title or "prefill time vs. visual-token budget"
        )
    return written
