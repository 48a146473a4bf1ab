"""The evaluation loop: every method at every budget over the same items, resumable."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from ..bench.flops import LMShape, lm_shape, prefill_flops, staged_flops
from ..config import Keep, comparison_options
from ..report import PruneReport
from ..results import keep_label, unpruned
from ..vlm import PrunedVLM
from .cache import PredictionCache
from .data import EvalItem
from .metrics import accuracy_by_family, is_correct
from .stats import paired_comparison, wilson_interval


def configurations(methods: Sequence[str], keeps: Sequence[Keep]) -> list[tuple[str, Keep]]:
    """(method, keep) pairs; the unpruned model is evaluated once, not once per budget."""
    pairs: list[tuple[str, Keep]] = []
    for method in methods:
        pairs += [(method, 1.0)] if unpruned(method) else [(method, k) for k in keeps]
    return pairs


def evaluate(
    vlm: PrunedVLM,
    items: Sequence[EvalItem],
    methods: Sequence[str],
    keeps: Sequence[Keep],
    cache: PredictionCache,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 4,
    seed: int = 0,
    progress: bool = True,
    estimator_options: Mapping[str, Any] | None = None,
    references: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Predict every item under every (method, keep); finished predictions come from ``cache``.

    ``vlm`` is left as it was (each configuration runs on ``vlm.using(...)``); ``estimator_options``
    go to the methods that take a sensitivity estimator only.

    Returns one summary dict per configuration: accuracy overall and per family with 95 % Wilson
    intervals, mean kept tokens, and paired comparisons on the same questions against the unpruned
    model and against each of ``references`` at the same budget (see :func:`add_comparisons`).
    """
    pairs = configurations(methods, keeps)
    shape = lm_shape(vlm.model.config)
    todo_total = sum(1 for m, k in pairs for it in items if cache.get(m, keep_label(m, k), it.uid) is None)
    bar = tqdm(total=todo_total, desc="eval", unit="q", disable=not progress)
    summaries = []
    for method, keep in pairs:
        label = keep_label(method, keep)
        trial = vlm.using(
            method=method, keep=keep, seed=seed, **comparison_options(method, estimator_options)
        )
        todo = [it for it in items if cache.get(method, label, it.uid) is None]
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            bar.set_postfix_str(f"{method}@{label}")
            result = trial.generate(
                [it.image for it in batch], [it.question for it in batch], max_new_tokens=max_new_tokens
            )
            cache.add(
                [
                    {
                        "method": method,
                        "keep": label,
                        "uid": it.uid,
                        "family": it.family,
                        "answer": it.answer,
                        "prediction": text,
                        "correct": is_correct(text, it.answer),
                        "tokens_before": report.tokens_before,
                        "tokens_after": report.tokens_after,
                        "equivalent_tokens": report.equivalent_tokens,
                        "prefill_flops": report_prefill_flops(report, shape),
                    }
                    for it, text, report in zip(batch, result.texts, result.reports)
                ]
            )
            bar.update(len(batch))
        rows = [cache.get(method, label, it.uid) for it in items]
        accuracy = accuracy_by_family((r["family"], r["correct"]) for r in rows)
        intervals = family_intervals((r["family"], r["correct"]) for r in rows)
        summaries.append(
            {
                "method": method,
                "keep": label,
                "num_samples": len(rows),
                "accuracy": accuracy["overall"],
                "ci95": intervals.pop("overall"),
                "per_family": {k: v for k, v in accuracy.items() if k != "overall"},
                "per_family_ci95": intervals,
                "correct": [bool(r["correct"]) for r in rows],  # in item order: pairs configurations
                "mean_tokens_before": sum(r["tokens_before"] for r in rows) / len(rows),
                "mean_kept_tokens": sum(r["tokens_after"] for r in rows) / len(rows),
                "mean_equivalent_tokens": sum(r.get("equivalent_tokens", r["tokens_after"]) for r in rows)
                / len(rows),
                "mean_prefill_gflops": sum(r.get("prefill_flops", 0.0) for r in rows) / len(rows) / 1e9,
            }
        )
    bar.close()
    add_relative(summaries)
    add_comparisons(summaries, references)
    for s in summaries:
        del s["correct"]
    return summaries


def report_prefill_flops(report: PruneReport, shape: LMShape) -> float:
    """Prefill FLOPs (FastV/DivPrune formula) of a one-image prompt: all tokens up to the first
    in-LLM stage's layer, then text + each stage's visual tokens up to the next stage
    (``report.stages``; one stage at ``prune_layer`` for FastV / DART, layer 0 for pre-LLM methods)."""
    text = report.text_tokens
    return staged_flops(
        prefill_flops,
        text + report.tokens_before,
        text + report.tokens_after,
        report.prune_layer,
        shape.layers,
        shape,
        [(layer, text + visual) for layer, visual in report.stages or ()],
    )


def family_intervals(rows: Iterable[tuple[str, bool]]) -> dict[str, list[float]]:
    """``(family, correct)`` pairs -> 95 % Wilson interval per family and ``"overall"``."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for family, correct in rows:
        for key in (family, "overall"):
            counts[key][0] += int(correct)
            counts[key][1] += 1
    return {k: list(wilson_interval(hits, n)) for k, (hits, n) in sorted(counts.items())}


def add_comparisons(summaries: list[dict[str, Any]], references: Sequence[str] = ()) -> None:
    """Paired comparisons on the same questions (needs each summary's ``correct`` vector):
    ``vs_unpruned`` against the unpruned model and ``vs_references[name]`` against each method of
    ``references`` at the same budget, each ``{difference, ci95 (paired bootstrap), mcnemar_p,
    distinguishable, ...}`` or None where that configuration was not evaluated (or is the
    configuration itself). ``references`` is stored beside them (the table's column order)."""
    base = next((s for s in summaries if unpruned(s["method"])), None)
    by_config = {(s["method"], s["keep"]): s for s in summaries}

    def versus(s: dict[str, Any], other: dict[str, Any] | None) -> dict[str, Any] | None:
        return (
            None
            if other is None or other is s
            else paired_comparison(s["correct"], other["correct"]).to_dict()
        )

    for s in summaries:
        s["vs_unpruned"] = versus(s, base)
        s["references"] = list(references)
        s["vs_references"] = {ref: versus(s, by_config.get((ref, s["keep"]))) for ref in references}


def add_relative(summaries: list[dict[str, Any]]) -> None:
    """The paper's "Rel." column: accuracy as a percentage of the unpruned model's (if evaluated)."""
    base = next((s["accuracy"] for s in summaries if unpruned(s["method"])), None)
    for s in summaries:
        s["relative"] = None if not base else 100.0 * s["accuracy"] / base
