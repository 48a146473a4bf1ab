"""``norm``: the top-k projected tokens by L2 norm (a sanity baseline, see testbed-findings)."""

from __future__ import annotations

from ..tensors import sorted_unique
from .base import PruneContext, Selection, register_method


@register_method("norm", summary="top-k projected tokens by L2 norm (sanity baseline)")
def top_norm(ctx: PruneContext, k: int) -> Selection:
    """Keep the ``k`` tokens whose projected embedding ``(N, d_l)`` has the largest L2 norm."""
    scores = ctx.projected.float().norm(dim=-1)  # (N,)
    return Selection(indices=sorted_unique(scores.topk(k).indices), scores=scores)
