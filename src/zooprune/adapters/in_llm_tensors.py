"""Tensor helpers of the in-LLM hooks (:mod:`.in_llm`): where each image sits in the sequence,
the last token's head-averaged attention, a per-row gather, and the checks on a stage's selection."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ImageSlot", "check_stage_selection", "image_slots", "last_token_attention", "take_rows"]


@dataclass
class ImageSlot:
    """Where one image's N visual tokens sit in the (left-padded) full sequence."""

    row: int
    start: int
    length: int


def last_token_attention(q: Tensor, keys: Tensor, valid: Tensor, model_dtype: bool = False) -> Tensor:
    """``(B, L)`` head-averaged attention of one query per row on every key.

    Args:
        q: ``(B, H, 1, d_h)`` post-RoPE query of the last token.
        keys: ``(B, H_kv, L, d_h)`` post-RoPE keys (repeated here to the H query heads).
        valid: ``(B, L)`` keys that may be attended (padding False).
        model_dtype: False: float32 logits, softmax and mean (``fidelity="improved"``). True: as the
            reference's eager Llama attention (pkunlp-icler/FastV ``LlamaAttention.forward``): logits
            ``q k^T / sqrt(d_h)`` in the model's dtype, masked keys at the dtype's minimum, softmax in
            float32 cast back to the model's dtype, head mean in the model's dtype.
    """
    head_dim = q.shape[-1]
    groups = q.shape[1] // keys.shape[1]
    keys = keys.repeat_interleave(groups, dim=1)
    if model_dtype:
        logits = q @ keys.transpose(-1, -2) / math.sqrt(head_dim)  # (B, H, 1, L), model dtype
        logits = logits.masked_fill(~valid[:, None, None, :], torch.finfo(logits.dtype).min)
        return logits.softmax(-1, dtype=torch.float32).to(q.dtype).mean(dim=1)[:, 0]
    logits = q.float() @ keys.float().transpose(-1, -2) / math.sqrt(head_dim)
    weights = logits.masked_fill(~valid[:, None, None, :], float("-inf")).softmax(-1)  # (B, H, 1, L)
    return weights.mean(dim=1)[:, 0]


def check_stage_selection(method: str, kept: Tensor, n: int, tokens: Tensor | None) -> None:
    """A stage's selection: sorted, unique indices into the ``n`` current tokens, tokens for each."""
    if kept.dim() != 1 or (kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= n)):
        raise ValueError(f"method {method!r} returned indices outside [0, {n}) or not 1-D")
    if kept.numel() > 1 and not bool((kept[1:] > kept[:-1]).all()):
        raise ValueError(f"method {method!r} returned indices that are not sorted and unique")
    if tokens is not None and tokens.shape[0] != kept.numel():
        raise ValueError(f"method {method!r} returned {tokens.shape[0]} tokens for {kept.numel()} kept indices")


def take_rows(x: Tensor, dim: int, index: Tensor) -> Tensor:
    """Gather ``x`` along ``dim`` with a per-row ``(B, M)`` index (broadcast over other dims)."""
    shape = [1] * x.dim()
    shape[0], shape[dim] = index.shape[0], index.shape[1]
    idx = index.view(shape).expand(*[x.shape[d] if d not in (0, dim) else shape[d] for d in range(x.dim())])
    if x.shape[0] == 1 and index.shape[0] > 1:
        x = x.expand(index.shape[0], *x.shape[1:])
    return x.gather(dim, idx)


def image_slots(input_ids: Tensor, image_token_id: int, tokens_per_image: list[int]) -> list[ImageSlot]:
    """Each image's contiguous run of placeholders in ``input_ids`` ``(B, L)``, in image order."""
    slots, image = [], 0
    for row in range(input_ids.shape[0]):
        positions = (input_ids[row] == image_token_id).nonzero().flatten().tolist()
        used = 0
        while used < len(positions):
            n = tokens_per_image[image]
            slots.append(ImageSlot(row, positions[used], n))
            used, image = used + n, image + 1
    return slots
