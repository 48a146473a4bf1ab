"""Per-crop budgets: prune each group of an image's tokens separately (LLaVA-NeXT anyres crops).

The paper's LLaVA-NeXT setting (and the reference code): the budget is split equally over the
base image and the crops, each crop is scored and selected on its own, and the image-newline
tokens are kept on top of the budget.
"""

from __future__ import annotations

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
    summary = CropSummary(n)
    for group, grid, share in zip(groups, group_grids, shares):
        if share == 0:
            continue
        if share >= group.numel():
            kept.append(group)
            kept_tokens.append(ctx.projected[group])
            continue
        sub = ctx.subset(group, grid=grid)
        sel = method(sub, share)
        local = sel.indices.to(group.device)
        tokens = sel.tokens if sel.tokens is not None else sub.projected[local]
        kept.append(group[local])
        kept_tokens.append(tokens[: local.numel()])
        merged.append(tokens[local.numel() :])
        summary.add(group, sel)
    indices = torch.cat(kept)
    order = indices.argsort()
    tokens = torch.cat([torch.cat(kept_tokens)[order], *merged])
    return summary.selection(indices[order], tokens)


def select_frames(
    method: Method,
    ctx: PruneContext,
    groups: list[Tensor],
    always_keep: Tensor | None,
    keep: int | float,
    max_tokens: int,
) -> Selection:
    """ZOO-Prune's reference crop handling (``fidelity="reference"``; AIM-SKKU/ZOO-Prune
    ``LLaVA/llava/model/llava_arch_llava_next_7b.py::prepare_inputs_labels_for_multimodal`` and
    ``select_tokens_sads_multi_frames``), reproduced as written:

    - budget: ``target = int(max_tokens * r)`` (the reference hard-codes 2880 = 5 x 576, whatever the
      image's own token count; a count ``keep`` is the target itself), then
      ``k_frame = int(target / frames)`` for every crop ("frame": base image and each high-res crop,
      unpadded), capped at the crop's size;
    - every crop is scored with the *same* bank of directions (the reference scores all crops in
      one call) and selected on its own (``ctx.group`` = the crop's index);
    - newlines: the reference keeps the indices of the ``-inf`` sensitivities it appended after every
      high-res row, but those indices are taken *within the high-res part* and used as indices into
      the packed sequence, which starts with the base crop's tokens: the kept positions are the
      real newline positions minus the base crop's size, i.e. mostly base-crop and high-res tokens,
      while the real newlines are dropped (unless an offset position is itself a newline). The union
      is de-duplicated (``torch.unique``), so fewer than picks + newlines tokens may remain.

    Args:
        groups: per crop ``(n_g,)`` indices into the packed tokens, the base crop first.
        always_keep: ``(n_newlines,)`` packed positions of the newline tokens, or None.
        keep: the config's budget; max_tokens: the adapter's ``ImageTokens.max_tokens``.
    """
    n = ctx.num_tokens
    target = int(max_tokens * keep) if isinstance(keep, float) else int(keep)
    share = int(target / len(groups))
    state = ctx.generator.get_state() if ctx.generator is not None else None
    kept: list[Tensor] = []
    summary = CropSummary(n)
    for index, group in enumerate(groups):
        k = min(share, int(group.numel()))
        if k <= 0:
            continue
        if k >= group.numel():
            kept.append(group)
            continue
        sub = ctx.subset(
            group,
            grid=None,
            generator=None if state is None else torch.Generator().set_state(state),
            group=index,
        )
        sel = method(sub, k)
        if sel.tokens is not None:
            raise ValueError(f"method {method.name!r} merges tokens: the 'frames' crop handling cannot place them")
        kept.append(group[sel.indices.to(group.device)])
        summary.add(group, sel)
    if always_keep is not None and always_keep.numel():
        shifted = always_keep - int(groups[0].numel())  # the reference's offset newline indices
        kept.append(shifted[shifted >= 0])
    indices = torch.unique(torch.cat(kept)) if kept else torch.zeros(0, dtype=torch.long)
    return summary.selection(indices)


class CropSummary:
    """What the per-crop selections of one image add up to: the ``(N,)`` scores of every scored crop,
    the estimator named, and the summed timings."""

    def __init__(self, n: int) -> None:
        self.scores = torch.zeros(n, dtype=torch.float32)
        self.has_scores = False
        self.estimator: str | None = None
        self.timings: dict[str, float] = {}

    def add(self, group: Tensor, sel: Selection) -> None:
        """Record crop ``group``'s ``(n_g,)`` selection."""
        if sel.scores is not None:
            self.scores[group.cpu()] = sel.scores.float().cpu()
            self.has_scores = True
        self.estimator = sel.estimator or self.estimator
        for key, value in sel.timings.items():
            self.timings[key] = self.timings.get(key, 0.0) + value

    def selection(self, indices: Tensor, tokens: Tensor | None = None) -> Selection:
        """The whole image's :class:`Selection` with these kept ``indices`` (and tokens)."""
        return Selection(
            indices=indices,
            scores=self.scores if self.has_scores else None,
            tokens=tokens,
            timings=self.timings,
            estimator=self.estimator,
        )
