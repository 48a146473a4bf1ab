"""How many placeholder tokens an image gets: a pure function of (visual tokens, grid, configuration).

vLLM reserves an image's positions in the prompt (and its KV cache) in the multimodal processor,
before the vision tower runs, so the number of tokens a method will return must be known from the
budget alone. For methods that select (zoo, divprune, random, norm, cdpruner, ...) it is
``k = resolve_budget(keep, N)``; for methods that merge tokens (pool's output grid, visionzip's
dominant + contextual split) it is whatever the method returns for that k, found by running the
method once on placeholder tensors of the right shape (its output *count* depends on N, the grid and
its options only; the engine checks every real selection against this count).
"""

from __future__ import annotations

import functools

import torch

from ..adapters.base import ImageTokens
from ..config import PruneConfig, resolve_budget
from ..methods import PruneContext
from ..pipeline import select_image


def planned_tokens(config: PruneConfig, num_tokens: int, grid: tuple[int, int] | None) -> int:
    """Tokens the image keeps under ``config`` (what its placeholders must number).

    Args:
        config: the request's validated configuration (a pre-LLM method).
        num_tokens: N, the image's visual tokens before pruning.
        grid: ``(rows, cols)`` of those tokens, or None.
    """
    method = config.spec
    if not method.prunes:
        return num_tokens
    k = resolve_budget(config.keep, num_tokens)
    if k >= num_tokens:
        return num_tokens
    if not method.merges_tokens:
        return k
    return _dry_run_count(config, num_tokens, grid)


@functools.lru_cache(maxsize=256)
def _dry_run_count(config: PruneConfig, n: int, grid: tuple[int, int] | None) -> int:
    """Output count of a token-merging method, from one run on placeholder tensors of shape (n, 1)."""
    zeros = torch.zeros(n, 1)
    ctx = PruneContext(
        projected=zeros,
        features=zeros,
        projector=lambda x: x,
        grid=grid,
        cls_attention=torch.linspace(1.0, 2.0, n),
        keys=torch.zeros(n, 1, 1),
        instruction=torch.zeros(1, 1),
        generator=torch.Generator().manual_seed(config.seed),
        options=config.options,
    )
    sel = select_image(config.spec, config, ImageTokens(projected=zeros, features=zeros, grid=grid), ctx)
    return int(sel.tokens.shape[0]) if sel.tokens is not None else int(sel.indices.numel())


def planned_grouped(
    config: PruneConfig, sizes: list[int], grids: list[tuple[int, int] | None], extra: int
) -> int:
    """Tokens a multi-crop image keeps (LLaVA-NeXT anyres), as ``zooprune.pipeline.select_image``
    keeps them: the budget over the crops' ``sizes`` (split equally, ``crop_shares``; one pool for
    ``budget="whole"``), each crop's share through the method, plus ``extra`` tokens kept on top
    (image newlines).

    Args:
        config: the request's configuration (pre-LLM method).
        sizes: tokens of each crop (base image first), after unpadding.
        grids: each crop's ``(rows, cols)`` or None.
        extra: tokens kept whatever the budget.
    """
    method = config.spec
    budgeted = sum(sizes)
    if not method.prunes:
        return budgeted + extra
    k = resolve_budget(config.keep, budgeted)
    if k >= budgeted:
        return budgeted + extra
    if config.budget == "whole":
        return extra + planned_tokens(config.replace(keep=k), budgeted, None)
    from ..adapters.groups import crop_shares

    kept = 0
    for size, grid, share in zip(sizes, grids, crop_shares(k, sizes)):
        if share >= size:
            kept += size
        elif share > 0:
            kept += planned_tokens(config.replace(keep=share), size, grid)
    return kept + extra
