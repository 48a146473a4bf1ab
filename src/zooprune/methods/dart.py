"""``dart``: in-LLM pruning by duplication with respect to pivot tokens at layer K (default K = 2).

DART (Wen et al., "Stop Looking for Important Tokens in Multimodal Language Models:
Duplication Matters More", 2025); semantics follow ZichenWen1/DART's
``get_retained_image_token``: pivots are the visual tokens (and text tokens after the image)
with the largest L1 norm of their layer K-1 keys; for each pivot in turn, keep the remaining
visual tokens least cosine-similar to the pivot's (final-normed) hidden state. The image
pivots are kept; text pivots only guide. Options: ``pivot_image_tokens`` (4),
``pivot_text_tokens`` (4), ``layer`` (K = 2).

Budget: the reference keeps ``pivots + n_pivots * (max_num // n_pivots)`` tokens; here the
k - (image pivots) picks are split over the pivots as evenly as possible so exactly k are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@register_method(
    "dart",
    needs=("llm_layer",),
    stage="in_llm",
    summary="DART: keep visual tokens least similar to key-norm pivots at LLM layer K=2 (in-LLM)",
    options=DartOptions,
)
def dart(ctx: PruneContext, k: int) -> Selection:
    """``ctx.llm_keys`` ``(N, d_k)`` and ``ctx.llm_hidden`` ``(N, d)`` of the visual tokens (+ query text)."""
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
