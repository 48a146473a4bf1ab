"""``dart``: in-LLM pruning by duplication with respect to pivot tokens at layer K (default K = 2).

DART (Wen et al., "Stop Looking for Important Tokens in Multimodal Language Models:
Duplication Matters More", 2025); semantics follow ZichenWen1/DART's
``get_retained_image_token``: pivots are the visual tokens (and text tokens after the image)
with the largest L1 norm of their layer K-1 keys; for each pivot in turn, keep the remaining
visual tokens least cosine-similar to the pivot's (final-normed) hidden state. The image
pivots are kept; text pivots only guide. Options: ``pivot_image_tokens`` (4),
``pivot_text_tokens`` (4), ``layer`` (K = 2).

Budget: the reference keeps ``pivots + n_pivots * (max_num // n_pivots)`` tokens; here the
k - (image pivots) picks are split over the pivots as evenly as possible so exactly k are kept,
and the pivots are visited in top-k order (image pivots by key norm, then text pivots).

``fidelity="reference"`` (:func:`dart_reference`) follows ``get_retained_image_token`` as written:
M = k, ``TOKEN_TOPK = M // (image + text pivots)`` picks per pivot, so ``4 + 8 * (k // 8)`` tokens
are kept with the default pivots; the pivots are visited in the order Python iterates
``set(image_pivots + text_pivots).copy()`` of their *absolute* sequence positions (a hash-table
order, not a ranking), and the candidates in ``list(valid_indices)`` order; the positions are taken
from the image's real start in the unpadded sequence (``ctx.llm_image_start``, the reference: 35).

Batches: any size, ragged included (rows keeping different counts are left-padded with hidden slots
in ``adapters/in_llm.py``; batch == one by one), under SDPA or eager attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..tensors import sorted_unique
from .base import PruneContext, Selection, register_method
from .options import InLLMOptions


@dataclass(frozen=True)
class DartOptions(InLLMOptions):
    """Options of ``dart``: the pruning ``layer`` K (2) and how many pivots to take.

    Attributes:
        pivot_image_tokens: visual pivots (largest key L1 norm), kept.
        pivot_text_tokens: text pivots after the image (largest key L1 norm), guide only.
    """

    pivot_image_tokens: int = 4
    pivot_text_tokens: int = 4


#: ``image_token_start_index`` of the reference's LLaVA-1.5 runs (the vicuna_v1 system prompt is 35
#: tokens): the absolute positions its pivot set is built from when the context gives none. The in-LLM
#: plan always gives one (``ctx.llm_image_start``: the image's first token in the unpadded sequence).
REFERENCE_IMAGE_START = 35


def dart_reference(ctx: PruneContext, k: int) -> Selection:
    """DART as ZichenWen1/DART ``get_retained_image_token`` computes it (``fidelity="reference"``).

    Positions are absolute, ``start = ctx.llm_image_start`` (else :data:`REFERENCE_IMAGE_START`):
    image pivots = top ``pivot_image_tokens`` visual tokens by L1 norm of their keys, text pivots = top
    ``pivot_text_tokens`` of the tokens after the image; ``TOKEN_TOPK = k // (number of pivots)``;
    for each pivot in ``list(set(pivots).copy())`` order, the ``TOKEN_TOPK`` candidates (``list`` of the
    remaining visual positions, a Python set) of lowest cosine similarity to the pivot's hidden state
    join the kept set and leave the candidates; finally the text pivots are removed. Cosines are
    computed in float32 (the reference: in the model's dtype).

    Returns:
        ``Selection`` of the ``image pivots + TOKEN_TOPK * pivots`` kept visual tokens (sorted).
    """
    ctx.require("llm_keys", "llm_hidden", method="dart")
    opts: DartOptions = ctx.options
    n = ctx.num_tokens
    start = REFERENCE_IMAGE_START if ctx.llm_image_start is None else int(ctx.llm_image_start)
    key_norm = ctx.llm_keys.float().abs().sum(dim=-1)  # (N,) torch.norm(p=1)
    image_idx = (key_norm.topk(min(opts.pivot_image_tokens, n)).indices + start).tolist()
    has_text = ctx.llm_query_keys is not None and ctx.llm_query_keys.shape[0] > 0
    query_idx: list[int] = []
    if has_text:
        text_norm = ctx.llm_query_keys.float().abs().sum(dim=-1)  # (T,)
        query_idx = (text_norm.topk(min(opts.pivot_text_tokens, text_norm.numel())).indices + start + n).tolist()
    per_pivot = k // (opts.pivot_image_tokens + opts.pivot_text_tokens)  # TOKEN_TOPK = M // pivots
    hidden = ctx.llm_hidden.float()
    kept: set[Any] = set(image_idx + query_idx)
    order = list(kept.copy())  # the reference iterates a copy of the pivot set
    valid = set(range(start, start + n))
    valid.difference_update(image_idx)
    for item in order:
        candidates = list(valid)
        vector = hidden[item - start] if item < start + n else ctx.llm_query_hidden.float()[item - start - n]
        rows = torch.tensor(candidates, dtype=torch.long) - start
        neg_sim = -F.cosine_similarity(vector[None], hidden[rows], dim=-1)  # (R,)
        top = neg_sim.topk(min(per_pivot, len(candidates))).indices.tolist()
        chosen = [candidates[i] for i in top]
        kept.update(chosen)
        valid.difference_update(chosen)
    kept.difference_update(query_idx)
    indices = sorted_unique(torch.tensor(sorted(kept), dtype=torch.long) - start)
    return Selection(indices=indices, scores=key_norm)


@register_method(
    "dart",
    needs=("llm_layer",),
    stage="in_llm",
    summary="DART: keep visual tokens least similar to key-norm pivots at LLM layer K=2 (in-LLM)",
    options=DartOptions,
    reference="ZichenWen1/DART get_retained_image_token (its LLaVA decoder DART_K_norm.forward, layer K)",
)
def dart(ctx: PruneContext, k: int) -> Selection:
    """``ctx.llm_keys`` ``(N, d_k)`` and ``ctx.llm_hidden`` ``(N, d)`` of the visual tokens (+ query text)
    (``fidelity="reference"``: :func:`dart_reference`)."""
    if ctx.fidelity == "reference":
        return dart_reference(ctx, k)
    ctx.require("llm_keys", "llm_hidden", method="dart")
    n = ctx.num_tokens
    key_norm = ctx.llm_keys.float().abs().sum(dim=-1)  # (N,) L1 norm of keys
    n_img = min(ctx.options.pivot_image_tokens, k)
    image_pivots = key_norm.topk(n_img).indices.tolist()
    pivot_vectors = [ctx.llm_hidden[i] for i in image_pivots]
    if ctx.llm_query_keys is not None and ctx.llm_query_keys.shape[0] > 0:
        text_norm = ctx.llm_query_keys.float().abs().sum(dim=-1)  # (T,)
        n_txt = min(ctx.options.pivot_text_tokens, text_norm.numel())
        pivot_vectors += [ctx.llm_query_hidden[i] for i in text_norm.topk(n_txt).indices.tolist()]
    remaining = torch.ones(n, dtype=torch.bool)
    remaining[image_pivots] = False
    kept = list(image_pivots)
    picks = k - n_img
    quota = [
        picks // len(pivot_vectors) + (1 if i < picks % len(pivot_vectors) else 0)
        for i in range(len(pivot_vectors))
    ]
    hidden = ctx.llm_hidden.float()
    for pivot, q in zip(pivot_vectors, quota):
        if q == 0:
            continue
        candidates = remaining.nonzero().flatten()
        sim = F.cosine_similarity(pivot.float()[None], hidden[candidates], dim=-1)  # (R,)
        chosen = candidates[(-sim).topk(min(q, candidates.numel())).indices]  # least duplicated
        remaining[chosen] = False
        kept += chosen.tolist()
    scores = key_norm
    return Selection(indices=sorted_unique(torch.tensor(kept, dtype=torch.long)), scores=scores)
