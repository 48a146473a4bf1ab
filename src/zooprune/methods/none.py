"""``none``: keep every visual token (the unpruned reference)."""

from __future__ import annotations

import torch

from .base import PruneContext, Selection, register_method


@register_method(
    "none",
    summary="no pruning: every visual token is kept",
    prunes=False,
    aliases=("all", "full"),
    reference="the stock model (nothing is pruned)",
)
def keep_all(ctx: PruneContext, k: int) -> Selection:
    """Return all N indices whatever ``k`` is."""
    return Selection(indices=torch.arange(ctx.num_tokens, device=ctx.projected.device))
