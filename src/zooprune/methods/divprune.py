"""``divprune``: max-min diversity selection on the projected tokens (DivPrune, CVPR 2025).

Paper: Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal
Models" (arXiv 2503.02175). Semantics follow the authors' ``DivPrune`` function in
vbdi/divprune, ``LLaVA/llava/model/llava_arch.py`` (called on the projector output, before
the language model):

1. D = 1 - cos(Z_i, Z_j) on the projected tokens Z ``(N, d_l)``.
2. First pick: the token whose nearest neighbour is farthest, i.e. argmax over columns of
   the *second*-smallest value of each column of D (the smallest being the token itself).
3. Then repeatedly the token whose minimum distance to the picked set is largest
   (paper Eq. 3: argmax_i min_{j in S} D(i, j)).
4. Keep the picks in their original order; no merging.

Differences from the reference, on purpose (same picks otherwise):
- the minimum over the picked set is a running minimum (O(k N) after the O(N^2 d)
  distances, instead of re-reducing a (|S|, N) slice every step: floating-point ``min`` is
  exact, so the values are bitwise the same);
- already-picked tokens are masked out, so duplicate tokens can never be picked twice
  (the reference relies on their distance to themselves being ~0);
- batches ``(B, N, d)`` are supported; ties go to the lowest index (as ``argmax`` does).

Budget: the reference resolves k = round(r * N); this library resolves k centrally as
int(r * N) (see ``zooprune.config``), so at a ratio the two can differ by one token.

``fidelity="reference"`` (:func:`divprune_reference`) follows the reference instead: distances in
the model's dtype with its ``pairwise_cosine_similarity`` (rows divided by their norm, one matrix
product), k = round(r * N) (Python's round, half to even), and on LLaVA-NeXT one pool of the whole
packed sequence, image-newline tokens included (``Method.reference_crops = "one-pool"``: the reference
prunes ``new_input_embeds[35 : 35 + len]``, the packed image features).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..tensors import check_finite, cosine_distance
from .base import PruneContext, Selection, register_method


@torch.no_grad()
def divprune_select(projected: Tensor, k: int) -> Tensor:
    """DivPrune max-min diversity selection.

    Args:
        projected: ``(N, d)`` or ``(B, N, d)`` projected visual tokens.
        k: tokens to keep, ``k >= 1``; ``k >= N`` keeps everything.

    Returns:
        ``(k,)`` or ``(B, k)`` LongTensor of kept indices, sorted ascending.
    """
    if projected.dim() not in (2, 3):
        raise ValueError(f"projected must be (N, d) or (B, N, d), got shape {tuple(projected.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    check_finite("projected", projected)
    batched = projected.dim() == 3
    z = projected if batched else projected.unsqueeze(0)  # (B, N, d)
    bsz, n, _ = z.shape
    if k >= n:
        idx = torch.arange(n, device=z.device).expand(bsz, n)
        return idx if batched else idx[0]
    dist = cosine_distance(z)  # (B, N, N), symmetric
    rows = torch.arange(bsz, device=z.device)
    # First pick: second-smallest entry of each column (reference: topk(2, largest=False)[1]).
    nn_dist = torch.topk(dist, 2, dim=1, largest=False).values[:, 1, :]  # (B, N)
    nxt = nn_dist.argmax(dim=-1)  # (B,)
    picked = torch.zeros(bsz, n, dtype=torch.bool, device=z.device)
    chosen = torch.empty(bsz, k, dtype=torch.long, device=z.device)
    min_dist = torch.full((bsz, n), float("inf"), device=z.device)
    for t in range(k):
        chosen[:, t] = nxt
        picked[rows, nxt] = True
        min_dist = torch.minimum(min_dist, dist[rows, nxt])  # min over picked set (Eq. 3), (B, N)
        if t + 1 < k:
            nxt = min_dist.masked_fill(picked, float("-inf")).argmax(dim=-1)
    out = chosen.sort(dim=-1).values
    return out if batched else out[0]


@torch.no_grad()
def divprune_reference(projected: Tensor, k: int) -> Tensor:
    """DivPrune as vbdi/divprune's ``DivPrune`` computes it (``fidelity="reference"``).

    In ``projected``'s own dtype (the model's; no float32 upcast): ``D = 1 - (Z / ||Z||)(Z / ||Z||)^T``
    (``pairwise_cosine_similarity``); first pick ``argmax`` of the second-smallest entry of each
    column (``topk(2, dim=0, largest=False).values[1]``); then ``argmax`` over columns of the minimum
    over the picked rows. Picked tokens are masked (the reference relies on their distance to
    themselves being about 0; they differ only if every remaining token is a near-duplicate, where
    the reference would pick a token twice).

    Args:
        projected: ``(N, d)`` projected tokens; k: ``1 <= k <= N``.

    Returns:
        ``(k,)`` sorted LongTensor.
    """
    check_finite("projected", projected)
    n = projected.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    unit = projected / projected.norm(dim=1, keepdim=True)
    dist = 1.0 - torch.mm(unit, unit.t())  # (N, N), model dtype
    nxt = int(torch.argmax(torch.topk(dist, 2, dim=0, largest=False).values[1, :]))
    picked = torch.zeros(n, dtype=torch.bool, device=projected.device)
    chosen = torch.empty(k, dtype=torch.long, device=projected.device)
    min_dist = dist[nxt]
    for t in range(k):
        chosen[t] = nxt
        picked[nxt] = True
        if t > 0:
            min_dist = torch.minimum(min_dist, dist[nxt])  # min over the picked rows (exact)
        if t + 1 < k:
            nxt = int(torch.argmax(min_dist.masked_fill(picked, float("-inf"))))
    return chosen.sort().values


@register_method(
    "divprune",
    summary="DivPrune: max-min diversity on projected tokens (diversity-only ablation)",
    reference="vbdi/divprune LLaVA/llava/model/llava_arch.py::DivPrune (called in prepare_inputs_labels_for_multimodal)",
    reference_rounding="round",
    reference_crops="one-pool",
)
def divprune(ctx: PruneContext, k: int) -> Selection:
    """DivPrune for one image: ``ctx.projected`` ``(N, d_l)`` -> ``k`` sorted indices
    (``fidelity="reference"``: :func:`divprune_reference`)."""
    if ctx.fidelity == "reference":
        return Selection(indices=divprune_reference(ctx.projected, k))
    return Selection(indices=divprune_select(ctx.projected, k))
