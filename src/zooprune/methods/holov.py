"""``holov``: the budget shared over spatial crops by a holistic score, then [CLS] attention per crop.

Paper: Zou et al., "Don't Just Chase 'Highlighted Tokens' in MLLMs: Revisiting Visual Holistic
Context Retention" (HoloV, NeurIPS 2025, arXiv 2510.02912). Semantics follow the authors' code,
obananas/HoloV, ``llava/model/utils.py::HoloV`` (called from ``llava/model/llava_arch.py::
prepare_inputs_labels_for_multimodal`` with ``num_patches=16`` on the projector output and the
head-averaged [CLS] attention of the vision layer the model reads):

1. Crops: the N tokens, in raster order, are cut into P = 16 contiguous slices (not 2-D blocks),
   sizes ``N // P``, the first ``N % P`` slices one token longer; empty slices are skipped.
2. Crop score. In a crop of n >= 2 tokens, with S the cosine similarity of its projected tokens
   (norms + 1e-6) and its diagonal set to 0: ``mean_i = sum_j S_ij / (n - 1)``,
   ``var_i = sum_j (S_ij - mean_i)^2 / (n - 1)`` (the zeroed diagonal entry included, as the
   reference sums it); ``a_i = 1000 * attention_i``; token score
   ``t_i = a_i + alpha * var_i * mean|a| / (mean|var| + 1e-6)`` (alpha = 0.09); crop score
   ``mean_i t_i``. A one-token crop scores its raw attention.
3. Allocation: ``w = score / (sum score + 1e-6)``, ``alloc = floor(w * k)``, and the
   ``k - sum alloc`` leftover tokens go one each to the crops of largest w.
4. In each crop, its ``alloc`` tokens of highest [CLS] attention (the variance term only shapes
   the budget, as in the reference code).

Tensor shapes: ``projected`` ``(N, d_l)``, ``cls_attention`` ``(N,)``; returns ``(k,)`` indices.

Differences from the reference, on purpose:
- a crop allocated more tokens than it holds keeps all of them and the excess is handed to the
  other crops in descending w (each up to its size), so k real tokens come back; the reference
  instead pads the language model's input with zero vectors up to k;
- kept tokens are returned in original order (the reference concatenates crops, each in
  descending attention order); every method here keeps the original order;
- sorts are stable, so exact ties go to the lower index / earlier crop;
- LLaVA-NeXT: the reference runs HoloV once on the concatenation of the base view and the
  unpadded high-resolution grid (newline tokens dropped); here, as for every method, each crop is
  pruned with its share of the budget and newlines are kept (see the family notes);
- computed in float32, or float64 for float64 inputs (the reference uses the model dtype for the
  similarity).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..tensors import at_least_float32, check_finite, sorted_unique
from .base import PruneContext, Selection, register_method
from .options import MethodOptions

#: The reference's epsilon (norms, variance scale, weight normalisation).
EPS = 1e-6


@dataclass(frozen=True)
class HoloVOptions(MethodOptions):
    """Options of ``holov``.

    Attributes:
        crops: P, the number of contiguous raster-order crops (reference: 16).
        alpha: weight of the similarity-variance term in the crop score (reference: 0.09).
    """

    crops: int = 16
    alpha: float = 0.09

    def __post_init__(self) -> None:
        if self.crops < 1:
            raise ValueError(f"crops must be >= 1, got {self.crops}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")


def crop_bounds(n: int, crops: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of the non-empty contiguous crops (reference step 1)."""
    base, extra = divmod(n, crops)
    bounds, start = [], 0
    for p in range(crops):
        size = base + (1 if p < extra else 0)
        if size > 0:
            bounds.append((start, start + size))
        start += size
    return bounds


def crop_score(tokens: Tensor, attention: Tensor, alpha: float) -> Tensor:
    """Holistic score of one crop (reference step 2): ``(n, d)`` tokens, ``(n,)`` attention -> scalar."""
    n = tokens.shape[0]
    if n <= 1:
        return attention.mean()
    z = tokens / (tokens.norm(dim=1, keepdim=True) + EPS)
    sim = (z @ z.T).fill_diagonal_(0.0)  # (n, n)
    mean = sim.sum(dim=1) / (n - 1)
    var = (sim - mean[:, None]).square().sum(dim=1) / (n - 1)  # (n,)
    scaled = attention * 1e3
    var_scale = scaled.abs().mean() / (var.abs().mean() + EPS)
    return (scaled + alpha * var * var_scale).mean()


def allocate(weights: Tensor, sizes: Tensor, k: int) -> Tensor:
    """Tokens per crop (reference step 3, then the excess of full crops handed on).

    Args:
        weights: ``(P,)`` normalised crop scores w.
        sizes: ``(P,)`` tokens in each crop, ``sum(sizes) >= k``.
        k: the budget.

    Returns:
        ``(P,)`` LongTensor, ``0 <= alloc <= sizes``, summing to k.
    """
    alloc = torch.floor(weights * k).long()
    order = torch.sort(weights, descending=True, stable=True).indices
    leftover = k - int(alloc.sum())
    if leftover > 0:
        alloc[order[: min(leftover, order.numel())]] += 1
    alloc = torch.minimum(alloc, sizes)
    excess = k - int(alloc.sum())
    for p in order.tolist():  # deviation: hand the excess of full crops on, largest w first
        if excess <= 0:
            break
        add = min(int(sizes[p] - alloc[p]), excess)
        alloc[p] += add
        excess -= add
    return alloc


@torch.no_grad()
def holov_select(projected: Tensor, cls_attention: Tensor, k: int, crops: int = 16, alpha: float = 0.09) -> Tensor:
    """HoloV for one image.

    Args:
        projected: ``(N, d_l)`` projected visual tokens, raster order.
        cls_attention: ``(N,)`` [CLS] attention to each token (heads averaged).
        k: tokens to keep, ``k >= 1``; ``k >= N`` keeps everything.

    Returns:
        ``(min(k, N),)`` LongTensor of kept indices, sorted ascending.
    """
    n = projected.shape[0]
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k >= n:
        return torch.arange(n, device=projected.device)
    x, attn = at_least_float32(projected), at_least_float32(cls_attention)
    bounds = crop_bounds(n, crops)
    scores = torch.stack([crop_score(x[s:e], attn[s:e], alpha) for s, e in bounds])  # (P,)
    weights = scores / (scores.sum() + EPS)
    sizes = torch.tensor([e - s for s, e in bounds], device=x.device)
    alloc = allocate(weights, sizes, k)
    kept = []
    for (s, e), m in zip(bounds, alloc.tolist()):
        if m > 0:
            kept.append(s + torch.sort(attn[s:e], descending=True, stable=True).indices[:m])
    return sorted_unique(torch.cat(kept))


@register_method(
    "holov",
    needs=("cls_attention",),
    summary="HoloV: budget shared over spatial crops by attention + similarity variance, [CLS] attention within",
    options=HoloVOptions,
)
def holov(ctx: PruneContext, k: int) -> Selection:
    """HoloV for one image: ``projected`` ``(N, d_l)`` + ``cls_attention`` ``(N,)`` -> k indices.

    ``scores`` is the [CLS] attention ``(N,)`` (what ranks tokens within a crop).
    """
    (attn,) = ctx.checked("cls_attention", method="holov")
    attn = attn.reshape(-1)
    check_finite("projected", ctx.projected)
    opts: HoloVOptions = ctx.options
    idx = holov_select(ctx.projected, attn, k, opts.crops, opts.alpha)
    return Selection(indices=idx, scores=attn.float())
