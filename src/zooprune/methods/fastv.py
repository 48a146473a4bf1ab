"""``fastv``: in-LLM pruning by the last prompt token's attention at layer K (default K = 2).

FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", ECCV 2024); semantics follow
pkunlp-icler/FastV's ``FastVLlamaModel.forward``: after layer K-1, average the attention of
the last token over heads, keep the top-R visual tokens, prune them from layer K on, keep the
original position ids. Only the last token's attention row at layer K-1 is computed (from the
cached keys), so every layer still runs SDPA. Option ``layer`` sets K (``InLLMOptions``).

Selection happens once, at prefill, and the KV cache holds only the kept tokens from layer K on
(the "KV cache" variant). The paper's reference (``FastVLlamaModel.forward`` with ``use_cache``
off) re-runs the whole sequence at every decoding step and re-selects the kept tokens from the
newest token's attention each time. That per-step re-selection is not implemented, so
``fidelity="reference"`` raises for ``fastv`` (see ``docs/fidelity.md``).
"""

from __future__ import annotations

from ..tensors import sorted_unique
from .base import PruneContext, Selection, register_method
from .options import InLLMOptions


@register_method(
    "fastv",
    needs=("llm_layer",),
    stage="in_llm",
    summary="FastV: top-k visual tokens by last-token attention at LLM layer K=2 (in-LLM)",
    options=InLLMOptions,
    reference_unsupported="the reference (pkunlp-icler/FastV, FastVLlamaModel.forward) re-selects the kept "
    "tokens at every decoding step from the newest token's attention, without a KV cache; zooprune selects "
    "once at prefill and caches the kept tokens' keys (the KV-cache variant), and per-step re-selection is "
    "not implemented",
)
def fastv(ctx: PruneContext, k: int) -> Selection:
    """Keep the ``k`` visual tokens with the largest ``ctx.llm_attention`` ``(N,)``."""
    ctx.require("llm_attention", method="fastv")
    scores = ctx.llm_attention.float()  # (N,)
    return Selection(indices=sorted_unique(scores.topk(k).indices), scores=scores)
