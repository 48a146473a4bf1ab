"""What the efficiency figures read: ``zooprune eval`` and ``zooprune bench`` JSON, joined by
(method, budget). The figures themselves are drawn by :mod:`zooprune.plots`.

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

from .methods import get_method
from .methods.estimators import DEFAULT_ESTIMATOR


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


def keep_label(method: str, keep: Any) -> str:
    """How a budget is written in results: ``"all"`` for the unpruned model, ``str(keep)`` else."""
    return "all" if unpruned(method) else str(keep)


def keep_key(method: str, keep: Any) -> tuple[str, str]:
    """``(method, budget)`` as eval writes it (see :func:`keep_label`)."""
    return method, keep_label(method, keep)


def unpruned(method: str) -> bool:
    """Whether ``method`` is the unpruned reference (a registered method that keeps every token);
    names no longer registered (older result files) count as pruning methods."""
    try:
        return not get_method(method).prunes
    except KeyError:
        return False


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
