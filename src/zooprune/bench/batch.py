"""``zooprune bench --batch``: throughput of batched pruned generation with ragged per-image budgets.

One *workload* of ``W = max(batch sizes)`` images (distinct seeded images, one prompt) is run at
every batch size b: the images in chunks of b, each chunk one batched generation, so every batch
size does the same work. Image i gets budget ``keeps[i % len(keeps)]`` (ragged within a batch:
e.g. 640 / 320 / 160 / 640 / ...), so a batch holds sequences of different lengths, left-padded.

A chunk runs the library's own path: the processor on its images, ``PrunedVLM.prepare`` (encode,
select, splice) once per distinct budget in the chunk (the pipeline takes one budget per call),
the pieces merged into one left-padded batch (:func:`merge_prepared`), then one stock
``generate``. In-LLM methods need the same kept count in every row, so they run the workload at
one budget (``keeps[0]``; ``uniform_budget`` says so). The unpruned model runs the same workload.

Per batch size and round: each chunk's e2e / TTFT (``e2e - decode``: all images of a chunk get
their first token together) / prefill / encode / score / select ms, its images, budgets, kept and
visual tokens and padded length; ``images_per_s = W / sum(chunk e2e)``. Medians over rounds;
rounds interleave the batch sizes (a drift of the machine hits them alike).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from ..adapters.splice import SplicedInputs
from ..config import Keep
from ..methods import get_method
from ..pipeline import PreparedInputs
from ..vlm import PrunedVLM, generate_pruned
from .runner import Case, synchronize


def ragged_budgets(keeps: Sequence[Keep], count: int) -> list[Keep]:
    """Budget of each of ``count`` images: ``keeps`` repeated in order."""
    if not keeps:
        raise ValueError("need at least one budget")
    return [keeps[i % len(keeps)] for i in range(count)]


def merge_prepared(parts: Sequence[PreparedInputs], pad_id: int = 0) -> PreparedInputs:
    """One left-padded batch from several pre-LLM :class:`PreparedInputs` (rows in order of ``parts``).

    Only families whose model inputs are ``inputs_embeds`` + ``attention_mask`` (LLaVA, LLaVA-NeXT)
    can be merged this way; phases ``encode`` / ``score`` / ``select`` are summed; ``pad_id`` fills
    the padded ``input_ids`` (not read by the model, which gets ``inputs_embeds``).
    """
    if len(parts) == 1:
        return parts[0]
    for part in parts:
        if part.plan is not None:
            raise ValueError("in-LLM batches cannot be merged: run them with one budget")
        extra = set(part.model_kwargs()) - {"inputs_embeds", "attention_mask"}
        if extra:
            raise ValueError(
                f"cannot merge model inputs {sorted(extra)} across batches (LLaVA families only)"
            )
    rows: list[tuple[torch.Tensor, torch.Tensor]] = []
    sources: list[torch.Tensor] = []
    for part in parts:
        sp = part.spliced
        for b in range(sp.inputs_embeds.shape[0]):
            length = int(sp.attention_mask[b].sum())
            rows.append((sp.inputs_embeds[b, -length:], sp.input_ids[b, -length:]))
        sources += sp.source_positions
    first = parts[0].spliced
    longest = max(e.shape[0] for e, _ in rows)
    embeds = first.inputs_embeds.new_zeros(len(rows), longest, first.inputs_embeds.shape[-1])
    mask = torch.zeros(
        len(rows), longest, dtype=first.attention_mask.dtype, device=first.attention_mask.device
    )
    ids = torch.full((len(rows), longest), pad_id, dtype=first.input_ids.dtype, device=first.input_ids.device)
    for b, (e, i) in enumerate(rows):
        embeds[b, longest - e.shape[0] :] = e
        mask[b, longest - e.shape[0] :] = 1
        ids[b, longest - e.shape[0] :] = i
    spliced = SplicedInputs(embeds, mask, ids, sources)
    timings = {k: sum(p.timings.get(k, 0.0) for p in parts) for k in ("encode", "score", "select")}
    reports = [r for p in parts for r in p.reports]
    inputs = {"inputs_embeds": embeds, "attention_mask": mask}
    return PreparedInputs(spliced, reports, inputs, timings, None, parts[0].returns_prompt)


def prepare_chunk(
    vlm: PrunedVLM, images: list[Image.Image], prompts: list[str], budgets: list[Keep]
) -> tuple[PreparedInputs, list[int]]:
    """Prepare one batch with per-image ``budgets``: one ``prepare`` per distinct budget, merged.
    Returns the batch and, per row, the index of its image in ``images``."""
    order: list[int] = []
    parts = []
    for budget in dict.fromkeys(budgets):
        idx = [i for i, b in enumerate(budgets) if b == budget]
        parts.append(vlm.using(keep=budget).prepare([images[i] for i in idx], [prompts[i] for i in idx]))
        order += idx
    return merge_prepared(parts, vlm.adapter.pad_token_id()), order


def run_chunk(
    vlm: PrunedVLM, images: list[Image.Image], prompts: list[str], budgets: list[Keep], new_tokens: int
) -> dict[str, Any]:
    """One batched generation; its phases (ms) and per-image accounting, rows in ``images`` order."""
    gen = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}
    synchronize(vlm)
    start = time.perf_counter()
    prepared, order = prepare_chunk(vlm, images, prompts, budgets)
    generate_pruned(vlm.model, prepared, **gen)
    synchronize(vlm)
    e2e = (time.perf_counter() - start) * 1e3
    t = prepared.timings
    by_image = sorted(zip(order, prepared.reports), key=lambda pair: pair[0])
    return {
        "images": len(images),
        "budgets": list(budgets),
        "visual_tokens": [r.tokens_before for _, r in by_image],
        "kept_tokens": [r.tokens_after for _, r in by_image],
        "padded_len": int(prepared.spliced.attention_mask.shape[1]),
        "seq_lens": [int(prepared.spliced.attention_mask[order.index(i)].sum()) for i in range(len(images))],
        "ms": {
            "encode": float(t.get("encode", 0.0)),
            "score": float(t.get("score", 0.0)),
            "select": float(t.get("select", 0.0)),
            "prefill": float(t.get("prefill", 0.0)),
            "decode": float(t.get("decode", 0.0)),
            "e2e": e2e,
            "ttft": e2e - float(t.get("decode", 0.0)),
        },
    }


def run_workload(
    vlm: PrunedVLM, images: list[Image.Image], prompt: str, budgets: list[Keep], batch: int, new_tokens: int
) -> dict[str, Any]:
    """The whole workload in chunks of ``batch`` images: chunks and the round's totals."""
    chunks = [
        run_chunk(
            vlm,
            images[i : i + batch],
            [prompt] * len(images[i : i + batch]),
            budgets[i : i + batch],
            new_tokens,
        )
        for i in range(0, len(images), batch)
    ]
    return round_summary(chunks)


def round_summary(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """A round's totals from its chunks: images/s = images / sum of chunk e2e; TTFT per image =
    its chunk's TTFT (averaged over images)."""
    images = sum(c["images"] for c in chunks)
    total = sum(c["ms"]["e2e"] for c in chunks)
    ttft = sum(c["ms"]["ttft"] * c["images"] for c in chunks) / images
    return {
        "chunks": chunks,
        "total_ms": round(total, 3),
        "images_per_s": round(1e3 * images / total, 4) if total > 0 else None,
        "mean_ttft_ms": round(ttft, 3),
    }


def batch_cases(methods: list[str], estimators: list[str], num_directions: int | None) -> list[Case]:
    """The unpruned model, then each method (x estimator for the zoo methods); budgets come from the workload."""
    cases = [Case("none", 1.0)]
    for method in methods:
        spec = get_method(method)
        if not spec.prunes:
            continue
        if spec.takes_estimator:
            cases += [Case(method, 1.0, est, num_directions) for est in estimators]
        else:
            cases.append(Case(method, 1.0))
    return cases


def run_batch_bench(
    vlm: PrunedVLM,
    cases: list[Case],
    images: list[Image.Image],
    prompt: str,
    keeps: list[Keep],
    batch_sizes: list[int],
    new_tokens: int,
    repeats: int,
    warmup: int,
    on_sample: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Every case at every batch size on the same ``images``; one JSON-ready entry per case with
    per-batch-size rounds, medians and ratios vs batch 1 (or the smallest batch size)."""
    if any(b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be >= 1, got {batch_sizes}")
    sizes = sorted(dict.fromkeys(batch_sizes))
    entries = []
    for case in cases:
        spec = get_method(case.method)
        uniform = spec.in_llm or not spec.prunes
        budgets = ragged_budgets([keeps[0]] if spec.in_llm else keeps, len(images))
        if not spec.prunes:
            budgets = [1.0] * len(images)
        configured = vlm.using(method=case.method, keep=budgets[0], **case.options())
        rounds: dict[int, list[dict[str, Any]]] = {b: [] for b in sizes}
        for r in range(warmup + repeats):
            for b in sizes:
                result = run_workload(configured, images, prompt, budgets, b, new_tokens)
                if r >= warmup:
                    rounds[b].append(result)
                if on_sample is not None:
                    tag = "warm-up" if r < warmup else f"run {r - warmup + 1}/{repeats}"
                    on_sample(
                        f"{case.label.split('@')[0]} batch {b}: {tag} {result['images_per_s']:.3f} images/s"
                    )
        entries.append(batch_entry(case, budgets, uniform and spec.prunes, rounds))
    return entries


def batch_entry(
    case: Case, budgets: list[Keep], uniform_budget: bool, rounds: dict[int, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Medians per batch size and ratios vs the smallest batch size."""
    per_size = {}
    for b, runs in rounds.items():
        per_size[str(b)] = {
            "images_per_s": statistics.median(r["images_per_s"] for r in runs),
            "mean_ttft_ms": statistics.median(r["mean_ttft_ms"] for r in runs),
            "rounds": runs,
        }
    base = per_size[str(min(rounds))]
    for entry in per_size.values():
        entry["images_per_s_vs_smallest"] = round(entry["images_per_s"] / base["images_per_s"], 3)
        entry["ttft_vs_smallest"] = round(entry["mean_ttft_ms"] / base["mean_ttft_ms"], 3)
    return {
        "label": case.label.split("@")[0],
        "method": case.method,
        "estimator": case.estimator,
        "budgets": list(budgets),
        "uniform_budget": uniform_budget,
        "batch": per_size,
    }


def batch_table(entries: list[dict[str, Any]]) -> str:
    """Images/s and mean TTFT per case and batch size, with ratios vs the smallest batch."""
    head = f"{'case':<24}{'batch':>6}{'images/s':>10}{'x':>7}{'TTFT ms':>10}{'x':>7}  budgets"
    lines = [head, "-" * len(head)]
    for e in entries:
        for b, v in e["batch"].items():
            budgets = ",".join(str(k) for k in dict.fromkeys(e["budgets"]))
            lines.append(
                f"{e['label']:<24}{b:>6}{v['images_per_s']:>10.3f}{v['images_per_s_vs_smallest']:>7.2f}"
                f"{v['mean_ttft_ms']:>10.1f}{v['ttft_vs_smallest']:>7.2f}  {budgets}"
            )
    return "\n".join(lines)
