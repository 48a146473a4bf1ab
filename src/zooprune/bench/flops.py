"""Analytic costs: language-model prefill FLOPs, KV-cache bytes, sensitivity-estimator FLOPs.

Prefill follows the formula used by FastV (Chen et al. 2024, Sec. 4.3) and DivPrune (Alvar et
al. 2025): per decoder layer 4 n d^2 + 2 n^2 d + 2 n d m for n tokens, hidden size d and FFN
size m (attention projections, attention scores and values, FFN). It counts multiply-adds of a
non-gated FFN; Llama's gated FFN has three matrices (3 n d m) and grouped-query attention
shrinks the K/V projections, so :func:`llama_prefill_macs` gives the exact multiply-adds of a
Llama decoder layer for comparison. Speed-up bounds are ratios, so the unit cancels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LMShape:
    """Language-model widths.

    Attributes:
        hidden: d.
        intermediate: m (FFN width).
        layers: decoder layers L.
        heads: attention heads.
        kv_heads: key/value heads (= heads without GQA).
        vocab: vocabulary size.
    """

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def lm_shape(config: Any) -> LMShape:
    """Language-model widths of a HF config (a VLM's ``text_config``, or a text model's own config)."""
    text = getattr(config, "text_config", config)
    return LMShape(
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        layers=text.num_hidden_layers,
        heads=text.num_attention_heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or text.num_attention_heads,
        vocab=text.vocab_size,
    )


def prefill_flops(n: int, shape: LMShape, layers: int | None = None) -> float:
    """FastV / DivPrune prefill cost: L * (4 n d^2 + 2 n^2 d + 2 n d m) for ``n`` tokens."""
    d, m = shape.hidden, shape.intermediate
    per_layer = 4 * n * d * d + 2 * n * n * d + 2 * n * d * m
    return float((shape.layers if layers is None else layers) * per_layer)


def llama_prefill_macs(n: int, shape: LMShape, layers: int | None = None) -> float:
    """Exact multiply-adds of a Llama decoder stack (q/o: 2nd^2, k/v: 2nd*d_kv, QK^T and AV over
    the full n x n: 2n^2 d, gated FFN: 3ndm); norms, rotary and softmax left out."""
    d, m = shape.hidden, shape.intermediate
    d_kv = shape.kv_heads * shape.head_dim
    per_layer = 2 * n * d * d + 2 * n * d * d_kv + 2 * n * n * d + 3 * n * d * m
    return float((shape.layers if layers is None else layers) * per_layer)


def kv_cache_bytes(seq_len: int, shape: LMShape, bytes_per_element: int, layers: int | None = None) -> int:
    """K and V of every layer for ``seq_len`` positions: 2 * L * kv_heads * head_dim * seq * bytes."""
    count = shape.layers if layers is None else layers
    return 2 * count * shape.kv_heads * shape.head_dim * seq_len * bytes_per_element


def estimator_flops(estimator: str, n: int, d_v: int, h: int, d_l: int, num_directions: int = 64) -> float:
    """Multiply-adds of one image's sensitivity scores through a d_v -> h -> d_l MLP projector.

    ``central``: 2m projector passes on n tokens; ``jvp``: m tangent passes (the primal once);
    ``closed-form``: the first layer plus g^T K g (n h^2), K itself (h^2 (d_v + d_l), once per
    model) excluded. One projector pass is n (d_v h + h d_l).
    """
    one_pass = n * (d_v * h + h * d_l)
    if estimator == "central":
        return float(2 * num_directions * one_pass)
    if estimator == "jvp":
        return float((num_directions + 1) * one_pass)
    if estimator == "closed-form":
        return float(n * d_v * h + n * h * h)
    raise ValueError(f"no cost model for estimator {estimator!r}")


def segments(full: int, kept: int, layer: int, layers: int, stages: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """``(sequence length, layer count)`` per run of layers: ``full`` tokens up to the first pruning
    layer, then each in-LLM stage's ``(layer, sequence length)`` up to the next (``stages``; one stage
    ``(layer, kept)`` when empty: in-LLM methods prune after layer K, pre-LLM methods have ``layer = 0``)."""
    out, start, seq = [], 0, full
    for stage_layer, stage_seq in list(stages) or [(layer, kept)]:
        stop = min(stage_layer, layers)
        if stop > start:
            out.append((seq, stop - start))
        start, seq = max(start, stop), stage_seq
    return out + [(seq, max(0, layers - start))]


def staged_flops(
    count: Callable[..., float],
    full: int,
    kept: int,
    layer: int,
    layers: int,
    lm: LMShape,
    stages: Sequence[tuple[int, int]] = (),
) -> float:
    """Prefill cost when layers ``[0, layer)`` see ``full`` tokens and the rest ``kept`` (or each
    in-LLM stage's sequence from its layer on, :func:`segments`)."""
    parts = segments(full, kept, layer, layers, stages)
    head = sum((count(seq, lm, layers=n) for seq, n in parts[:-1]), 0.0)
    return head + count(parts[-1][0], lm, layers=parts[-1][1])
