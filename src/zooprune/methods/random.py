"""``random``: a uniform sample of k tokens, drawn from the context's seeded generator."""

from __future__ import annotations

import torch

from ..tensors import sorted_unique
from .base import PruneContext, Selection, register_method


@register_method("random", summary="uniform random sample of k tokens (seeded)")
def random_tokens(ctx: PruneContext, k: int) -> Selection:
    """Keep ``k`` of the ``N`` tokens uniformly at random (``torch.randperm`` on ``ctx.generator``)."""
    perm = torch.randperm(ctx.num_tokens, generator=ctx.generator)[:k]
    return Selection(indices=sorted_unique(perm).to(ctx.projected.device))
