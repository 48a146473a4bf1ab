"""``prunesid``: principal-component groups, per-group similarity NMS by [CLS] attention, shared budget.

Paper: Fang et al., "Prune Redundancy, Preserve Essence: Vision Token Compression in VLMs via
Synergistic Importance-Diversity" (PruneSID, ICLR 2026, openreview i36E5Ezm0H). Semantics follow
the authors' ZhengyaoFang/PruneSID, ``prunesid/prunesid_llava/clip_encoder.py``
(``CLIPVisionTower_PruneSID.forward`` with ``batch_pca`` and ``batch_similarity_nms``), on the
vision layer LLaVA reads (``hidden_states[-2]``, [CLS] row of ``attentions[-2]``):

1. Groups (PCA over tokens): A = sigmoid(X)^T ``(d_v, N)`` for the patch features X; each token's
   column is centred over the channels; V ``(N, q)`` holds the top q = int(k / 4) principal
   directions (right singular vectors); token i joins group ``argmax_j |V_ij|``.
2. Threshold: S = cosine similarity of the patch features; ``tau = (k / 32) * mean_{i<j} S_ij``.
3. Per-group NMS: repeatedly pick the group member of highest [CLS] attention among those not
   yet picked or suppressed, then suppress the members with ``S(pick, j) > tau``. The survivors
   (picks) of group g number ``m_g``; the group's ranking is its picks in pick order, then the
   suppressed members by attention.
4. Budget per group: lower ``l_g = min(1, c_g)`` (c_g = members); upper
   ``u_g = min(5 * ceil(k / 64), c_g, m_g)``, all raised by 1 (capped at c_g) until
   ``sum u >= k``; ``o = k - sum l`` shared in proportion to m_g by rounding the cumulative
   shares, ``d_g = round(o * cumsum(m / sum m))_g - round(...)_{g-1}``; ``t_g = min(d_g + l_g, u_g)``;
   any shortfall is filled group by group in descending m_g, each up to u_g.
5. Keep the first t_g of each group's ranking.

Tensor shapes: ``features`` ``(N, d_v)``, ``cls_attention`` ``(N,)``; returns ``(k,)`` indices.

Differences from the reference, on purpose:
- the [CLS] token is not kept: the reference spends one of the k tokens on the [CLS] hidden
  state (``o = k - sum l - 1`` and index 0 prepended); HF LLaVA drops [CLS] and the context holds
  patch tokens only, so here o = k - sum l and k patch tokens come back;
- PCA: the exact top-q right singular vectors of the centred matrix (``torch.linalg.svd``)
  instead of ``torch.pca_lowrank``'s randomized approximation (niter=2, drawn from the global
  RNG); the sign does not matter (absolute loadings). q = max(1, int(k / 4)), at most
  ``min(d_v - 1, N, k)`` (the centred matrix's rank bound; k so that every group can keep its
  token) and at least 1 (the reference fails for k < 4);
- kept tokens are returned in original order; the reference feeds LLaVA-1.5 its tokens in group
  order ([CLS], group 0's picks, group 1's, ...) and restores the spatial order for LLaVA-NeXT;
- the NMS runs while a member is neither picked nor suppressed (the reference stops at a zero
  score, which a softmax attention never is), and group rankings consider members only;
- stable sorts (exact ties to the lower index / group);
- PCA and similarity in float32, or float64 for float64 inputs (the reference computes the
  similarity in the model dtype); the budget shares in float32, as the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..tensors import at_least_float32, sorted_unique
from .base import PruneContext, Selection, register_method
from .options import MethodOptions


@dataclass(frozen=True)
class PruneSIDOptions(MethodOptions):
    """Options of ``prunesid``.

    Attributes:
        components: q, the number of principal-component groups (None: int(k / 4), the reference).
        group_cap: a group keeps at most ``group_cap * ceil(k / 64)`` tokens before the cap is
            raised to fill k (reference: 5).
    """

    components: int | None = None
    group_cap: int = 5

    def __post_init__(self) -> None:
        if self.components is not None and self.components < 1:
            raise ValueError(f"components must be >= 1, got {self.components}")
        if self.group_cap < 1:
            raise ValueError(f"group_cap must be >= 1, got {self.group_cap}")


def pca_groups(features: Tensor, q: int) -> Tensor:
    """Group of each token (reference ``batch_pca``): ``(N, d_v)`` features -> ``(N,)`` in ``[0, q)``."""
    a = torch.sigmoid(at_least_float32(features)).T  # (d_v, N): channels are the samples, tokens the variables
    a = a - a.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(a, full_matrices=False)  # vh: (min(d_v, N), N)
    return vh[:q].T.abs().argmax(dim=-1)


def group_nms(sim: Tensor, attention: Tensor, members: Tensor, tau: float) -> tuple[Tensor, int]:
    """Greedy NMS inside one group (reference ``batch_similarity_nms``, one group column).

    Args:
        sim: ``(N, N)`` cosine similarity.
        attention: ``(N,)`` [CLS] attention.
        members: ``(c,)`` indices of the group's tokens.
        tau: suppression threshold (``S > tau`` suppresses).

    Returns:
        ``(ranking, m)``: ``(c,)`` members, the m picks in pick order first, then the suppressed
        members by descending attention.
    """
    att = attention[members]
    alive = torch.ones(members.numel(), dtype=torch.bool, device=members.device)
    picks: list[int] = []
    while bool(alive.any()):
        j = int(att.masked_fill(~alive, float("-inf")).argmax())
        picks.append(j)
        alive &= sim[members[j], members] <= tau
        alive[j] = False
    picked = torch.zeros_like(alive)
    picked[picks] = True
    rest = (~picked).nonzero().squeeze(-1)
    rest = rest[torch.sort(att[rest], descending=True, stable=True).indices]
    order = torch.cat([torch.tensor(picks, dtype=torch.long, device=members.device), rest])
    return members[order], len(picks)


def group_budgets(counts: Tensor, survivors: Tensor, k: int, group_cap: int = 5) -> Tensor:
    """Tokens per group (reference step 4, without the [CLS] token).

    Args:
        counts: ``(q,)`` members per group, ``sum >= k``, at most k of them non-zero.
        survivors: ``(q,)`` NMS picks per group (>= 1 for a non-empty group).
        k: the budget.

    Returns:
        ``(q,)`` LongTensor summing to k, each within its group's size.
    """
    lower = torch.clamp(counts, max=1)
    if int(lower.sum()) > k:
        raise ValueError(f"{int(lower.sum())} non-empty groups cannot each keep a token with k={k}")
    upper = torch.minimum(torch.minimum(torch.full_like(counts, group_cap * math.ceil(k / 64)), counts), survivors)
    while int(upper.sum()) < k:
        upper = torch.minimum(upper + 1, counts)
    other = max(k - int(lower.sum()), 0)
    share = torch.cumsum(survivors / survivors.sum(), dim=0)  # float32, as the reference
    cum = torch.round(share * other).long()
    spread = cum - torch.cat([cum.new_zeros(1), cum[:-1]])
    budget = torch.minimum(spread + lower, upper)
    target = other + int(lower.sum())
    for g in torch.sort(survivors, descending=True, stable=True).indices.tolist():
        short = target - int(budget.sum())
        if short <= 0:
            break
        budget[g] += min(int(upper[g] - budget[g]), short)
    return budget


@torch.no_grad()
def prunesid_select(
    features: Tensor, cls_attention: Tensor, k: int, components: int | None = None, group_cap: int = 5
) -> Tensor:
    """PruneSID for one image.

    Args:
        features: ``(N, d_v)`` patch features at the vision layer the model reads.
        cls_attention: ``(N,)`` [CLS] attention to each patch at that layer.
        k: tokens to keep, ``k >= 1``; ``k >= N`` keeps everything.
        components: q (None: int(k / 4)).

    Returns:
        ``(min(k, N),)`` LongTensor of kept indices, sorted ascending.
    """
    n, d_v = features.shape
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k >= n:
        return torch.arange(n, device=features.device)
    q = components if components is not None else int(k / 4)
    q = max(1, min(q, d_v - 1, n, k))  # every non-empty group keeps a token: at most k groups
    group = pca_groups(features, q)  # (N,)
    z = F.normalize(at_least_float32(features), dim=-1)
    sim = z @ z.T  # (N, N)
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=sim.device), diagonal=1)
    tau = (k / 32) * float(sim[upper].mean())
    attn = at_least_float32(cls_attention)
    rankings, counts, survivors = [], [], []
    for g in range(q):
        members = (group == g).nonzero().squeeze(-1)
        ranking, m = group_nms(sim, attn, members, tau) if members.numel() else (members, 0)
        rankings.append(ranking)
        counts.append(members.numel())
        survivors.append(m)
    budget = group_budgets(torch.tensor(counts), torch.tensor(survivors), k, group_cap)
    kept = torch.cat([r[:t] for r, t in zip(rankings, budget.tolist())])
    return sorted_unique(kept)


@register_method(
    "prunesid",
    needs=("cls_attention", "features"),
    summary="PruneSID: PCA token groups, per-group similarity NMS by [CLS] attention, proportional budgets",
    options=PruneSIDOptions,
)
def prunesid(ctx: PruneContext, k: int) -> Selection:
    """PruneSID for one image: ``features`` ``(N, d_v)`` + ``cls_attention`` ``(N,)`` -> k indices.

    ``scores`` is the [CLS] attention ``(N,)``.
    """
    attn, feats = ctx.checked("cls_attention", "features", method="prunesid")
    attn = attn.reshape(-1)
    opts: PruneSIDOptions = ctx.options
    idx = prunesid_select(feats, attn, k, opts.components, opts.group_cap)
    return Selection(indices=idx, scores=attn.float())
