"""Efficiency figures from ``zooprune eval`` and ``zooprune bench`` JSON: accuracy against the
visual-token budget, against prefill time and against prefill FLOPs; prefill time against budget.

Eval results (``{"settings", "results": [summary, ...]}``) give accuracy per (method, budget)
and, from newer runs, ``mean_prefill_gflops``. Bench results (``{"meta", "rows": [row, ...]}``)
give median prefill milliseconds per (method, budget[, estimator]). Given both, each eval summary
gets the prefill time of the bench row of the same method and budget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..methods.estimators import DEFAULT_ESTIMATOR

UNPRUNED = "none"
#: Bench phases that accuracy is plotted against, and their axis labels.
TIME_AXES = {"prefill": "prefill time", "ttft": "time to first token"}


@dataclass
class Results:
    """Everything read from the given files."""

    summaries: list[dict[str, Any]] = field(default_factory=list)  # eval, one per (method, budget)
    bench_rows: list[dict[str, Any]] = field(default_factory=list)  # bench, one per case
    estimator: str = DEFAULT_ESTIMATOR  # the zoo estimator the eval run used
    eval_models: list[str] = field(default_factory=list)  # settings.model of each eval file
    bench_sources: list[str] = field(default_factory=list)  # meta.source of each bench file

    def mismatch(self) -> str | None:
        """A warning when eval and bench files name different models (their join is then apples to oranges)."""
        models = {Path(m).name for m in self.eval_models} | {Path(s).name for s in self.bench_sources}
        if self.eval_models and self.bench_sources and len(models) > 1:
            return f"eval and bench results come from different models: {sorted(models)}"
        return None


def read_results(paths: list[str | Path]) -> Results:
    """Read eval and/or bench JSON files (told apart by their ``results`` / ``rows`` keys)."""
    out = Results()
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"results file not found: {path}")
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("results"), list):
            out.summaries += data["results"]
            options = (data.get("settings") or {}).get("method_options") or {}
            out.estimator = options.get("estimator", out.estimator)
            out.eval_models.append(str((data.get("settings") or {}).get("model", "?")))
        elif isinstance(data, dict) and isinstance(data.get("rows"), list):
            out.bench_rows += data["rows"]
            out.bench_sources.append(str((data.get("meta") or {}).get("source", "?")))
        else:
            raise ValueError(
                f"{path}: neither 'zooprune eval' results (a 'results' list) nor 'zooprune bench' "
                "results (a 'rows' list)"
            )
    return out


def keep_key(method: str, keep: Any) -> tuple[str, str]:
    """``(method, budget)`` as eval writes it: ``"all"`` for the unpruned model, ``str(keep)`` else."""
    if method == UNPRUNED:
        return method, "all"
    return method, str(keep)


def with_time_ms(results: Results, phase: str = "prefill") -> list[dict[str, Any]]:
    """Eval summaries that have a ``phase`` time (``prefill`` or ``ttft``), as ``<phase>_ms``: their
    own or the matching bench row's median ``ms[phase]`` (for zoo methods, the row with the eval
    run's estimator, if several). Summaries with no such time are left out."""
    key = f"{phase}_ms"
    bench: dict[tuple[str, str], dict[str, Any]] = {}
    for row in results.bench_rows:
        match = keep_key(row["method"], row.get("keep"))
        if match not in bench or row.get("estimator") in (None, results.estimator):
            bench[match] = row
    joined = []
    for summary in results.summaries:
        ms = summary.get(key)
        row = bench.get(keep_key(summary["method"], summary["keep"]))
        if ms is None and row is not None:
            ms = row.get("ms", {}).get(phase)
        if ms is not None:
            joined.append({**summary, key: float(ms)})
    return joined


def with_prefill_ms(results: Results) -> list[dict[str, Any]]:
    """:func:`with_time_ms` for the prefill."""
    return with_time_ms(results, "prefill")


def _figure(title: str) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig, ax


def _save(fig: Any, path: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    outs = [path.with_suffix(".png"), path.with_suffix(".svg")]
    fig.tight_layout()
    for out in outs:
        fig.savefig(out, dpi=130)
    plt.close(fig)
    return outs


def plot_accuracy_vs(
    rows: list[dict[str, Any]], x: str, xlabel: str, path: str | Path, title: str
) -> list[Path]:
    """Accuracy (%) against ``row[x]``, one line per method (budgets joined in order of ``x``);
    the unpruned model is a black star. Writes PNG and SVG; returns their paths."""
    fig, ax = _figure(title)
    for method in dict.fromkeys(r["method"] for r in rows):
        points = sorted((r for r in rows if r["method"] == method), key=lambda r: r[x])
        xs, ys = [r[x] for r in points], [100 * r["accuracy"] for r in points]
        if method == UNPRUNED:
            ax.scatter(xs, ys, marker="*", s=160, color="black", zorder=3, label="unpruned")
        else:
            ax.plot(xs, ys, marker="o", lw=2.5 if method == "zoo" else 1.3, label=method)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, Path(path))


def plot_prefill_vs_budget(rows: list[dict[str, Any]], path: str | Path, title: str) -> list[Path]:
    """Median prefill ms against kept visual tokens, one line per bench case family (method and
    estimator); the unpruned model as a dashed line. Writes PNG and SVG."""
    fig, ax = _figure(title)
    families: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        name = row["method"] if row.get("estimator") is None else f"{row['method']}/{row['estimator']}"
        families.setdefault(name, []).append(row)
    for name, group in families.items():
        group = sorted(group, key=lambda r: r["kept_tokens"])
        if name == UNPRUNED:
            ax.axhline(group[0]["ms"]["prefill"], color="black", ls="--", lw=1, label="unpruned")
            continue
        ax.plot(
            [r["kept_tokens"] for r in group], [r["ms"]["prefill"] for r in group], marker="o", label=name
        )
    ax.set_xlabel("visual tokens kept per image")
    ax.set_ylabel("prefill (ms, median)")
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, Path(path))


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
    from ..eval.report import plot_accuracy_vs_budget

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
