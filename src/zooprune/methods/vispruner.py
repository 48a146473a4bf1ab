"""``vispruner``: important tokens by [CLS] attention + diverse tokens by iterative duplicate removal.

Paper: Zhang et al., "Beyond Text-Visual Attention: Exploiting Visual Cues for Effective Token
Pruning in VLMs" (VisPruner, ICCV 2025, arXiv 2412.01818). Semantics follow Theia-4869/VisPruner,
``llava/model/llava_arch.py::LlavaMetaForCausalLM.encode_images`` (selection) with the [CLS]
attention and features of ``llava/model/multimodal_encoder/clip_encoder.py::feature_select``
(the vision layer the model reads, [CLS] row of that layer's attention, heads averaged):

1. Split the budget: k_imp = int(k * important_ratio) important tokens (reference default ratio
   0.5, its ``--important_ratio``), k_div = k - k_imp diverse tokens.
2. Important: the k_imp tokens of highest [CLS] attention. The others, *in descending attention
   order*, form the residual list.
3. Duplicate removal on the residual list (the pre-projector features, cosine similarity), in
   rounds until k_div remain: with R residual tokens, r = min(step, R - k_div) (step = 8); the
   residual list is cut into ``a`` = positions 0, 2, 4, ... and ``b`` = positions 1, 3, 5, ...;
   each ``a`` token scores its highest cosine similarity to any ``b`` token; the r ``a`` tokens of
   highest score are dropped; the new residual list is the kept ``a`` tokens *in descending score
   order* followed by ``b`` in its order (the order decides the next round's split).
4. Keep important + remaining residual tokens, in original order; no merging. Candidates are
   patch tokens only (the reference's ``feature_select`` drops [CLS] too).

Tensor shapes: ``cls_attention`` ``(N,)``, ``features`` ``(N, d_v)``; returns ``(k,)`` indices.

Differences from the reference, on purpose (same picks otherwise):
- sorts are stable, so exact ties in attention or similarity go to the earlier position (the
  reference's ``argsort`` leaves tie order unspecified);
- with an odd residual count ``a`` has one row more than ``b`` (the reference's batch gather
  assumes an even count and fails to broadcast otherwise), and when r exceeds the number of ``a``
  rows every ``a`` row is dropped that round (the reference would fail on a negative size);
  both only happen far from the paper's settings (576 tokens, budgets 64 / 128 / 192);
- with k_div = 0 no residual token is kept (the reference's loop would reach an empty ``b``);
- similarities are computed in float32, or float64 for float64 inputs (the reference uses the
  model dtype, fp16).

Budget: k is resolved centrally (``zooprune.config``); LLaVA-NeXT crops get their share each, as
the reference prunes every crop with the same per-crop count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..tensors import at_least_float32, sorted_unique
from .base import PruneContext, Selection, register_method
from .options import MethodOptions


@dataclass(frozen=True)
class VisPrunerOptions(MethodOptions):
    """Options of ``vispruner``.

    Attributes:
        important_ratio: share of k kept as important tokens (reference default 0.5; the README
            also uses 0.75). The rest are diverse tokens.
        step: at most this many duplicates removed per round (reference: 8).
    """

    important_ratio: float = 0.5
    step: int = 8

    def __post_init__(self) -> None:
        if not 0.0 <= self.important_ratio <= 1.0:
            raise ValueError(f"important_ratio must be in [0, 1], got {self.important_ratio}")
        if self.step < 1:
            raise ValueError(f"step must be >= 1, got {self.step}")


def remove_duplicates(normed: Tensor, residual: Tensor, keep: int, step: int = 8) -> Tensor:
    """VisPruner's iterative matching and pruning (reference step 3).

    Args:
        normed: ``(N, d)`` L2-normalised features.
        residual: ``(R,)`` candidate indices, in the order that decides the even/odd split.
        keep: how many to keep, ``0 <= keep``.
        step: at most this many removed per round.

    Returns:
        ``(min(keep, R),)`` kept indices, in the reference's final residual order.
    """
    if keep <= 0:
        return residual[:0]
    while True:
        r = min(step, residual.numel() - keep)
        if r <= 0:
            return residual
        a, b = residual[0::2], residual[1::2]
        best = (normed[a] @ normed[b].T).max(dim=-1).values  # (|a|,) most similar b
        order = torch.sort(best, descending=True, stable=True).indices
        residual = torch.cat([a[order[r:]], b])


@torch.no_grad()
def vispruner_select(
    cls_attention: Tensor, features: Tensor, k: int, important_ratio: float = 0.5, step: int = 8
) -> Tensor:
    """VisPruner for one image.

    Args:
        cls_attention: ``(N,)`` [CLS] attention to each patch (heads averaged).
        features: ``(N, d_v)`` features at the same vision layer.
        k: tokens to keep, ``k >= 1``; ``k >= N`` keeps everything.

    Returns:
        ``(min(k, N),)`` LongTensor of kept indices, sorted ascending.
    """
    n = cls_attention.shape[0]
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k >= n:
        return torch.arange(n, device=cls_attention.device)
    k_imp = int(k * important_ratio)
    order = torch.sort(at_least_float32(cls_attention), descending=True, stable=True).indices  # (N,)
    normed = F.normalize(at_least_float32(features), dim=-1)
    diverse = remove_duplicates(normed, order[k_imp:], k - k_imp, step)
    return sorted_unique(torch.cat([order[:k_imp], diverse]))


@register_method(
    "vispruner",
    needs=("cls_attention", "features"),
    summary="VisPruner: [CLS]-attention important tokens + similarity-deduplicated diverse tokens",
    options=VisPrunerOptions,
)
def vispruner(ctx: PruneContext, k: int) -> Selection:
    """VisPruner for one image: ``cls_attention`` ``(N,)`` + ``features`` ``(N, d_v)`` -> k indices.

    ``scores`` is the [CLS] attention ``(N,)``.
    """
    attn, feats = ctx.checked("cls_attention", "features", method="vispruner")
    attn = attn.reshape(-1)
    opts: VisPrunerOptions = ctx.options
    idx = vispruner_select(attn, feats, k, opts.important_ratio, opts.step)
    return Selection(indices=idx, scores=attn.float())
