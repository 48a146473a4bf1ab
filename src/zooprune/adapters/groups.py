"""Per-crop budgets: prune each group of an image's tokens separately (LLaVA-NeXT anyres crops).

The paper's LLaVA-NeXT setting (and the reference code): the budget is split equally over the
base image and the crops, each crop is scored and selected on its own, and the image-newline
tokens are kept on top of the budget.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ..methods import Method, PruneContext, Selection


def crop_shares(k_total: int, sizes: list[int]) -> list[int]:
    """Split ``k_total`` equally over groups of ``sizes`` tokens (earlier groups take the remainder);
    a group smaller than its share keeps everything and its surplus goes to groups with room, so the
    shares sum to ``min(k_total, sum(sizes))``."""
    shares = [0] * len(sizes)
    left = min(k_total, sum(sizes))
    open_groups = [i for i, s in enumerate(sizes) if s > 0]
    while left > 0 and open_groups:
        base, extra = divmod(left, len(open_groups))
        for rank, i in enumerate(list(open_groups)):
            give = min(base + (1 if rank < extra else 0), sizes[i] - shares[i])
            shares[i] += give
            left -= give
        open_groups = [i for i in open_groups if shares[i] < sizes[i]]
    return shares


def select_grouped(
    method: Method,
    ctx: PruneContext,
    groups: list[Tensor],
    group_grids: list[tuple[int, int] | None] | None,
    always_keep: Tensor | None,
    k_total: int,
) -> Selection:
    """Run ``method`` on each group with its share of ``k_total``; indices are into the whole image.

    Args:
        ctx: context of the whole image ``(N, .)`` fields.
        groups: per group, ``(n_g,)`` indices into the image's N tokens.
        group_grids: per group, its ``(rows, cols)`` grid or None.
        always_keep: ``(n_keep,)`` indices kept on top of the budget (image newlines), or None.
    """
    n = ctx.num_tokens
    shares = crop_shares(k_total, [int(g.numel()) for g in groups])
    group_grids = group_grids or [None] * len(groups)
    kept: list[Tensor] = []  # original positions that survive as themselves
    kept_tokens: list[Tensor] = []  # their tokens (a merging method may have changed them)
    merged: list[Tensor] = []  # extra tokens of merging methods, placed after the kept ones
    if always_keep is not None:
        kept.append(always_keep)
        kept_tokens.append(ctx.projected[always_keep])
    scores = torch.zeros(n, dtype=torch.float32)
    has_scores = False
    timings: dict[str, float] = {}
    for group, grid, share in zip(groups, group_grids, shares):
        if share == 0:
            continue
        if share >= group.numel():
            kept.append(group)
            kept_tokens.append(ctx.projected[group])
            continue
        sub = replace(
            ctx,
            projected=ctx.projected[group],
            features=None if ctx.features is None else ctx.features[group],
            grid=grid,
            cls_attention=None if ctx.cls_attention is None else ctx.cls_attention[group],
            keys=None if ctx.keys is None else ctx.keys[group],
        )
        sel = method(sub, share)
        local = sel.indices.to(group.device)
        tokens = sel.tokens if sel.tokens is not None else sub.projected[local]
        kept.append(group[local])
        kept_tokens.append(tokens[: local.numel()])
        merged.append(tokens[local.numel() :])
        if sel.scores is not None:
            scores[group.cpu()] = sel.scores.float().cpu()
            has_scores = True
        for key, value in sel.timings.items():
            timings[key] = timings.get(key, 0.0) + value
    indices = torch.cat(kept)
    order = indices.argsort()
    tokens = torch.cat([torch.cat(kept_tokens)[order], *merged])
    return Selection(
        indices=indices[order], scores=scores if has_scores else None, tokens=tokens, timings=timings
    )
