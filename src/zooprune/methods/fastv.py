"""``fastv``: in-LLM pruning by the last token's attention at layer K (default K = 2).

FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", ECCV 2024); semantics follow
pkunlp-icler/FastV's ``LlamaModel.forward`` (``src/transformers/.../llama/modeling_llama.py``, the
``use_fast_v`` branch): at layer K (``fast_v_agg_layer``), take layer K-1's attention weights, average
them over heads, read the last token's row, keep the top-R (``fast_v_attention_rank``) of the image's
tokens, and drop the others from layer K on, keeping the original position ids
(``position_ids = keep_indexs``). Option ``layer`` sets K (``InLLMOptions``).

``fidelity="improved"`` (default): selection happens once, at prefill, from the last prompt token's
attention (float32, only that row computed from the cached keys, so every layer still runs SDPA), and
the KV cache holds only the kept tokens from layer K on (the KV-cache variant): one selection per
prompt, decoding as fast as the pruned prefill allows.

``fidelity="reference"``: the reference's evaluation runs (``generate(use_cache=False,
output_attentions=True)``, batch size 1) recompute the whole sequence at every decoding step, so the
kept tokens are re-selected at every step from the attention of that step's last token (the newest
generated token). zooprune reproduces this (``Method.reference_per_step``): every step reruns the
whole sequence (prompt + tokens generated so far) through the language model and re-selects;
nothing is reused between steps. **Slow by design**: each of T new tokens costs a full prefill
(O(T) prefills instead of one). The attention is computed as the reference's eager Llama attention
does: logits in the model's dtype, softmax in float32 cast back to the model's dtype, head mean in the
model's dtype; ``torch.topk`` on those values. Both reference variants (``fast_v_inplace`` drops the
tokens; the attention-mask variant keeps them but masks them as keys from layer K on) give the kept
positions the same outputs; zooprune drops them. Not reproduced: the fixed ``fast_v_sys_length`` /
``fast_v_image_token_length`` (zooprune finds the image in the real sequence) and the reference's
batch-size-1 rule (``[0]``: row 0's selection for the whole batch; zooprune selects per row).
See ``docs/fidelity.md``.

Batches: any size, ragged included (prompts keeping different numbers of tokens, e.g. with different
image counts or token counts: ``adapters/in_llm.py`` left-pads the shorter rows with hidden slots;
batch == one by one), under SDPA or eager attention; flash attention raises for a ragged batch.
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
    reference="pkunlp-icler/FastV modeling_llama.py LlamaModel.forward (use_fast_v; re-selected at every "
    "decoding step, no KV cache: slow by design)",
    reference_per_step=True,
)
def fastv(ctx: PruneContext, k: int) -> Selection:
    """Keep the ``k`` visual tokens with the largest ``ctx.llm_attention`` ``(N,)`` (``torch.topk``;
    ``fidelity="reference"``: on the attention in the model's dtype, as the reference ranks it)."""
    ctx.require("llm_attention", method="fastv")
    attention = ctx.llm_attention if ctx.fidelity == "reference" else ctx.llm_attention.float()  # (N,)
    return Selection(indices=sorted_unique(attention.topk(k).indices), scores=attention.float())
