"""Bench rows (medians, analytic costs, ratios vs the unpruned model) and their table; the plot is
:func:`zooprune.plots.plot_bench`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..results import unpruned
from .flops import LMShape, kv_cache_bytes, llama_prefill_macs, prefill_flops, segments, staged_flops
from .runner import PHASES, CaseResult
from .synthetic import Shape


def staged_kv(
    full: int,
    kept: int,
    layer: int,
    layers: int,
    lm: LMShape,
    new_tokens: int,
    element: int,
    stages: Sequence[tuple[int, int]] = (),
) -> int:
    """KV-cache bytes after ``new_tokens`` decode steps, layers before ``layer`` holding all tokens
    (or each stage's layers holding its sequence, :func:`segments`)."""
    parts = segments(full, kept, layer, layers, stages)
    return sum(kv_cache_bytes(seq + new_tokens, lm, element, layers=n) for seq, n in parts)


def tail_layer_ms(res: CaseResult, layers: int) -> float | None:
    """Median ms of one decoder layer that sees only the kept tokens, the cost of each layer a
    reduced-depth model leaves out: the mean over every measured layer for pre-LLM methods; for
    in-LLM methods over the layers after the last pruning layer K (whose own time includes the
    selection), or from K if none is after. None without per-layer timings."""
    per_layer = res.layer_medians()
    last = max([res.prune_layer, *(layer for layer, _ in res.stages)])
    tail = (per_layer[last + 1 :] or per_layer[last:]) if last else per_layer
    return sum(tail) / len(tail) if tail and len(per_layer) == layers else None


def build_rows(
    results: list[CaseResult], shape: Shape, prompt_len: int, new_tokens: int, bytes_per_element: int
) -> list[dict[str, Any]]:
    """One JSON-ready row per case; ratios are unpruned / case (higher = faster), the first result
    must be the unpruned baseline.

    ``prompt_len`` is the prompt length with all N visual placeholders; a case's language-model
    sequence is ``prompt_len - N + kept``. ``*_full`` fields extrapolate a reduced-depth model to
    ``shape.full_layers`` layers: the generate prefill plus the missing layers at the measured
    decoder-stack cost per layer (:func:`tail_layer_ms`: the measured layers that see only the kept
    tokens; ``lm_prefill / layers`` without per-layer timings), so fixed costs (embedding, lm_head,
    generate set-up) are counted once. ``flops_bound_speedup`` counts every layer at its own
    sequence length (in-LLM stages); ``flops_bound_speedup_equivalent`` uses the layer-averaged
    visual-token count (``equivalent_tokens``) in every layer.
    """
    base = results[0]
    if not unpruned(base.case.method):
        raise ValueError("the first bench result must be the unpruned baseline ('none')")
    lm_built, lm_full = shape.lm(), shape.lm(shape.full_layers)
    rows: list[dict[str, Any]] = []
    base_seq = prompt_len
    base_flops = prefill_flops(base_seq, lm_built)
    base_macs = llama_prefill_macs(base_seq, lm_built)
    for res in results:
        med = {phase: res.median(phase) for phase in PHASES}
        med["decode_per_token"] = res.median("decode_per_token")
        seq = prompt_len - res.visual_tokens + res.kept_tokens
        stages = [(layer, prompt_len - res.visual_tokens + kept) for layer, kept in res.stages]
        flops = staged_flops(prefill_flops, prompt_len, seq, res.prune_layer, shape.layers, lm_built, stages)
        macs = staged_flops(llama_prefill_macs, prompt_len, seq, res.prune_layer, shape.layers, lm_built, stages)
        per_layer = tail_layer_ms(res, shape.layers) or (med["lm_prefill"] or med["prefill"]) / shape.layers
        prefill_full = med["prefill"] + per_layer * (shape.full_layers - shape.layers)
        ttft_full = med["ttft"] - med["prefill"] + prefill_full
        row: dict[str, Any] = {
            "label": res.case.label,
            "method": res.case.method,
            "keep": res.case.keep,
            "estimator": res.case.estimator,
            "num_directions": res.case.num_directions,
            "visual_tokens": res.visual_tokens,
            "kept_tokens": res.kept_tokens,
            "seq_len": seq,
            "ms": {k: round(v, 3) for k, v in med.items()},
            "samples_ms": {k: [round(v, 3) for v in vals] for k, vals in res.samples.items()},
            "peak_rss_delta_mb": round(sorted(res.peak_rss)[len(res.peak_rss) // 2] / 2**20, 1)
            if res.peak_rss
            else None,
            "kv_cache_bytes": staged_kv(
                prompt_len, seq, res.prune_layer, shape.layers, lm_built, new_tokens, bytes_per_element, stages
            ),
            "kv_cache_bytes_full": staged_kv(
                prompt_len, seq, res.prune_layer, shape.full_layers, lm_full, new_tokens, bytes_per_element, stages
            ),
            "prefill_flops": flops,
            "prefill_flops_full": staged_flops(
                prefill_flops, prompt_len, seq, res.prune_layer, shape.full_layers, lm_full, stages
            ),
            "prune_layer": res.prune_layer,
            "stages": [list(st) for st in res.stages],
            "equivalent_tokens": round(res.equivalent_tokens, 2),
            "flops_bound_speedup": round(base_flops / flops, 3),
            "flops_bound_speedup_equivalent": round(
                base_flops / prefill_flops(prompt_len - res.visual_tokens + round(res.equivalent_tokens), lm_built), 3
            ),
            "lm_layers_ms": [round(v, 3) for v in res.layer_medians()],
            "llama_macs_bound_speedup": round(base_macs / macs, 3),
            "lm_prefill_per_layer_ms": round(per_layer, 3),
            "prefill_full_ms": round(prefill_full, 1),
            "ttft_full_ms": round(ttft_full, 1),
        }
        rows.append(row)
    b = rows[0]["ms"]
    for row in rows:
        m = row["ms"]
        row["speedup"] = {
            k: round(b[k] / m[k], 3) if m[k] > 0 else None
            for k in ("prefill", "lm_prefill", "ttft", "e2e", "decode_per_token")
        }
        row["prefill_speedup_of_bound"] = round(row["speedup"]["prefill"] / row["flops_bound_speedup"], 3)
        lm = row["speedup"]["lm_prefill"]
        row["lm_prefill_speedup_of_bound"] = None if lm is None else round(lm / row["flops_bound_speedup"], 3)
        row["speedup"]["prefill_full"] = round(rows[0]["prefill_full_ms"] / row["prefill_full_ms"], 3)
        row["speedup"]["ttft_full"] = round(rows[0]["ttft_full_ms"] / row["ttft_full_ms"], 3)
        unpruned_full = rows[0]["prefill_full_ms"]
        row["score_select_pct_of_unpruned_prefill_full"] = round(
            100 * (m["score"] + m["select"]) / unpruned_full, 3
        )
        row["select_pct_of_prefill_full"] = round(100 * m["select"] / row["prefill_full_ms"], 3)
        row["flops_bound_speedup_full"] = round(rows[0]["prefill_flops_full"] / row["prefill_flops_full"], 3)
    return rows


def bench_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table: medians (ms), memory, analytic costs and ratios vs unpruned. ``vis``: visual
    tokens the language model keeps (``eq``: averaged over its layers, in-LLM methods); ``TTFTxF``:
    the time-to-first-token speed-up extrapolated to the model's full depth."""
    head = (
        f"{'case':<28}{'vis':>5}{'eq':>7}{'seq':>6}{'encode':>9}{'score':>9}{'select':>8}{'prefill':>9}"
        f"{'LM pre':>9}{'dec/tok':>8}{'TTFT':>9}{'e2e':>9}{'peakMB':>8}{'KV MB':>7}{'GFLOPs':>8}{'bound':>7}"
        f"{'LM x':>7}{'%bnd':>6}{'TTFT x':>7}{'TTFTxF':>7}{'e2e x':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        m, s = r["ms"], r["speedup"]
        lm_x = s["lm_prefill"] or 0.0
        pct = r["lm_prefill_speedup_of_bound"] or 0.0
        lines.append(
            f"{r['label']:<28}{r['kept_tokens']:>5}{r.get('equivalent_tokens', r['kept_tokens']):>7.1f}{r['seq_len']:>6}"
            f"{m['encode']:>9.1f}{m['score']:>9.1f}{m['select']:>8.1f}"
            f"{m['prefill']:>9.1f}{m['lm_prefill']:>9.1f}{m['decode_per_token']:>8.1f}{m['ttft']:>9.1f}"
            f"{m['e2e']:>9.1f}{(r['peak_rss_delta_mb'] or 0):>8.0f}{r['kv_cache_bytes'] / 2**20:>7.1f}"
            f"{r['prefill_flops'] / 1e9:>8.1f}{r['flops_bound_speedup']:>7.2f}{lm_x:>7.2f}{100 * pct:>5.0f}%"
            f"{s['ttft']:>7.2f}{s['ttft_full']:>7.2f}{s['e2e']:>7.2f}"
        )
    return "\n".join(lines)
