"""``zooprune bench``: how much faster pruning makes a model, and what the scoring costs.

:func:`run_bench` measures the unpruned model and every method x budget (x sensitivity
estimator) side by side on one machine (phases, memory, KV cache, prefill FLOPs and the
FLOPs-bound speed-up), and writes JSON + a plot. ``--synthetic-shape`` builds random-weight
models with real widths (see :mod:`.synthetic`; ``llava-next-7b`` for LLaVA-NeXT's 2,880 tokens).
``batch_sizes`` measures batched throughput with ragged per-image budgets instead (:mod:`.batch`);
``growth_ns`` adds scoring / selection cost against N (:mod:`.growth`). The GPU readiness check
is :mod:`.device_check` (``scripts/device-check.sh``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import Keep, PruneConfig
from ..methods.estimators import DEFAULT_ESTIMATOR
from ..plots import plot_batch, plot_bench
from ..vlm import PrunedVLM, load
from .batch import batch_cases, batch_table, run_batch_bench
from .growth import cost_growth, growth_table
from .report import bench_table, build_rows
from .runner import (
    bench_image,
    bench_prompt,
    make_cases,
    run_cases,
    set_threads,
    takes_estimator,
    text_tokens,
    time_kernel_build,
)
from .synthetic import anyres_counts, parse_shape, shape_dict, shape_of_model, synthetic_llava

__all__ = ["run_bench", "bench_table", "plot_bench"]


def build_vlm(
    model: str | None, synthetic_shape: str | None, dtype: torch.dtype, seed: int, device: str
) -> tuple[PrunedVLM, Any, str]:
    """A :class:`PrunedVLM` for ``--model`` or ``--synthetic-shape``, its Shape and a description."""
    if (model is None) == (synthetic_shape is None):
        raise ValueError("give exactly one of --model PATH or --synthetic-shape NAME[,key=value...]")
    if synthetic_shape is not None:
        name, shape = parse_shape(synthetic_shape)
        net, processor = synthetic_llava(shape, seed=seed, dtype=dtype, device=device)
        vlm = PrunedVLM(net, processor, PruneConfig("none", keep=1.0))
        return vlm, shape, f"synthetic {synthetic_shape} (random weights)"
    vlm = load(model, method="none", keep=1.0, device=device, dtype=dtype)
    return vlm, shape_of_model(vlm.model), f"checkpoint {model}"


def run_bench(
    *,
    model: str | None = None,
    synthetic_shape: str | None = None,
    methods: list[str] = ("zoo",),  # type: ignore[assignment]
    keeps: list[Keep] = (64,),  # type: ignore[assignment]
    estimators: list[str] | None = None,
    num_directions: int | None = None,
    repeats: int = 3,
    warmup: int = 1,
    new_tokens: int = 8,
    prompt_words: int = 48,
    dtype: torch.dtype = torch.float32,
    threads: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    batch_sizes: list[int] | None = None,
    growth_ns: list[int] | None = None,
    growth_ratio: float = 0.111,
    output: str | Path | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Measure every case; returns ``{"meta": ..., "rows": [...]}`` and writes JSON + PNG if ``output``.

    Args:
        methods: pruning methods ("none" is always measured first as the baseline).
        keeps: budgets (token counts or ratios).
        estimators: sensitivity estimators for the zoo methods (default: ``central`` (the
            paper's) and the library default).
        num_directions: m for ``central`` / ``jvp`` (default 64).
        repeats / warmup: timed and untimed generations per case; medians are reported.
        new_tokens: generated tokens per run (forced: EOS does not stop generation).
        prompt_words: prompt length in words (one token each with the synthetic tokenizer).
        batch_sizes: measure batched throughput at these batch sizes instead of the per-case
            table: a workload of max(batch_sizes) images, image i at budget keeps[i % len(keeps)]
            (:mod:`zooprune.bench.batch`); the JSON gets ``batch`` instead of ``rows``.
        growth_ns: also time each pre-LLM method's scoring and selection at these N (random
            features, k = growth_ratio * N; :mod:`zooprune.bench.growth`): the JSON's ``growth``.
    """
    if repeats < 1 or warmup < 0 or new_tokens < 2:
        raise ValueError("need --repeats >= 1, --warmup >= 0 and --new-tokens >= 2")
    say = log or (lambda _msg: None)
    used_threads = set_threads(threads)
    estimators = list(estimators or dict.fromkeys(["central", DEFAULT_ESTIMATOR]))
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    vlm, shape, source = build_vlm(model, synthetic_shape, dtype, seed, device)
    say(f"built {source} in {time.perf_counter() - start:.1f} s; {used_threads} threads, {dtype}")
    side = shape.image_side
    image = bench_image(side, seed)
    prompt = bench_prompt(prompt_words)
    prompt_len, visual = text_tokens(vlm, image, prompt)
    packed, newlines = anyres_counts(vlm.model.config, side, side)
    if packed != visual:
        raise RuntimeError(f"the processor gives {visual} visual tokens, transformers' packing {packed}")
    cases = make_cases(list(methods), list(keeps), estimators, num_directions)
    kernel_ms = None
    if "closed-form" in estimators and any(takes_estimator(c.method) for c in cases):
        kernel_ms = time_kernel_build(vlm)
        say(f"closed-form K built once in {kernel_ms:.0f} ms")
    results, batch, growth = [], None, None
    if batch_sizes:
        images = [bench_image(side, seed + i) for i in range(max(batch_sizes))]
        bcases = batch_cases(list(methods), estimators, num_directions)
        batch = run_batch_bench(
            vlm, bcases, images, prompt, list(keeps), batch_sizes, new_tokens, repeats, warmup, on_sample=say
        )
    else:
        results = run_cases(vlm, cases, image, prompt, new_tokens, repeats, warmup, on_sample=say)
    if growth_ns:
        growth = cost_growth(vlm, cases, list(growth_ns), growth_ratio, repeats=repeats, seed=seed)
    element = torch.finfo(dtype).bits // 8
    rows = build_rows(results, shape, prompt_len, new_tokens, element) if results else []
    meta = {
        "source": source,
        "shape": shape_dict(shape),
        "dtype": str(dtype).replace("torch.", ""),
        "device": device,
        "threads": used_threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "loadavg_1min": [load_start, os.getloadavg()[0] if hasattr(os, "getloadavg") else None],
        "repeats": repeats,
        "warmup": warmup,
        "new_tokens": new_tokens,
        "prompt_tokens": prompt_len - visual,
        "visual_tokens": visual,
        "image_px": side,
        "newline_tokens": newlines,
        "budgeted_tokens": visual - newlines,
        "batch_sizes": sorted(set(batch_sizes)) if batch_sizes else None,
        "closed_form_kernel_build_ms": None if kernel_ms is None else round(kernel_ms, 1),
        "notes": [
            "ms: medians over repeats after warm-up, cases interleaved round by round; ttft = e2e - decode (processor, vision encode, "
            "scoring, selection, splice and LM prefill); prefill = model.generate start to first logits",
            "flops: FastV/DivPrune formula L*(4nd^2 + 2n^2 d + 2ndm) at the built depth; "
            "llama_macs_bound uses the exact Llama count (gated FFN 3ndm, GQA)",
            "lm_prefill: one forward of the decoder stack alone on the spliced inputs (what the FLOPs "
            "formula counts); *_full: reduced depth extrapolated to shape.full_layers with the measured "
            "lm_prefill per layer for the missing layers",
            "peak_rss_delta_mb: peak RSS during one generate (sampled every 2 ms) minus RSS before it",
            "kv_cache_bytes: K and V of every layer for seq_len + new_tokens positions",
            "LLaVA-NeXT: visual_tokens counts the packed positions (crop tokens after unpadding + one "
            "image-newline per high-res row); budgets apply to budgeted_tokens, newlines are kept on top",
            "in-LLM methods: lm_prefill is the whole decoder stack with the method's hooks (layers before "
            "and after the pruning layer); equivalent_tokens = visual tokens averaged over the layers",
        ],
    }
    report: dict[str, Any] = {"meta": meta, "rows": rows}
    if rows:
        say(bench_table(rows))
    if batch is not None:
        report["batch"] = batch
        say(batch_table(batch))
    if growth is not None:
        report["growth"] = growth
        say(growth_table(growth))
    if output is not None:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        title = f"{source}, {used_threads} threads, {meta['dtype']}"
        if rows:
            png = plot_bench(rows, out.with_suffix(".png"), title=title)
        else:
            png = plot_batch(batch or [], out.with_suffix(".png"), title=title)
        say(f"wrote {out} and {png}")
    return report
