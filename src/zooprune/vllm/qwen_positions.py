"""3-D M-RoPE positions of a Qwen2.5-VL prompt whose images keep only some of their tokens.

A kept token keeps its ``(t, h, w)`` position in the unpruned grid, and the text after an image
starts where it starts without pruning (the image's extent ``max(t, h, w)`` past its first
position), as ``zooprune.load`` does (``adapters.qwen2_vl.model_inputs``: the kept columns of
``get_rope_index`` on the full prompt) and as stock vLLM's ``get_mrope_input_positions`` does for
unpruned images. Each medium is described in the channel layout of vLLM's multimodal-pruning
interface (``vllm.multimodal.video_prune.evs.compute_mrope_for_media``: ``(k, 4)`` rows of
``t, h, w`` with the medium at position 0, plus a 4th channel), with the 4th channel holding the
unpruned extent (EVS puts the grid width there, which starts the next text too early for a tall
image). Pure tensor code.
"""

from __future__ import annotations

import torch
from torch import Tensor
from vllm.multimodal.video_prune.evs import compute_mrope_for_media

from ..methods import Selection


def kept_sources(sel: Selection, count: int, n: int) -> Tensor:
    """``(count,)`` the grid index each kept token sits at (merged tokens past the kept indices
    take the last one, ``n - 1``, as ``zooprune.adapters.splice`` places them)."""
    idx = sel.indices.long().cpu()
    tail = torch.full((count - idx.numel(),), n - 1, dtype=torch.long)
    return torch.cat([idx, tail])


def media_positions(
    grid_thw: list[int], merge: int, sources: Tensor | None = None, t_factor: float = 1.0
) -> Tensor:
    """``(k, 4)`` int64: the ``(t, h, w)`` ids of the medium's tokens at ``sources`` (all if None) in
    its unpruned merged grid, placed at position 0, and in channel 3 the unpruned extent
    ``max(t, h, w) + 1``: where the next text starts, relative to the medium's first position.

    Args:
        grid_thw: ``(t, h, w)`` patches (before the ``merge`` x ``merge`` merger).
        merge: the merger's ``spatial_merge_size``.
        sources: ``(k,)`` indices into the ``t h w / merge^2`` merged tokens (row-major).
        t_factor: video seconds per frame group x tokens per second (1 for images).
    """
    full = compute_mrope_for_media(torch.tensor(grid_thw), merge, video_second_per_grid=t_factor)  # (N, 4)
    out = (full if sources is None else full[sources]).clone()
    out[:, 3] = int(full[:, :3].max()) + 1
    return out


def prompt_positions(length: int, media: list[tuple[int, Tensor]]) -> tuple[Tensor, int]:
    """``(3, length)`` positions of a prompt and its decode delta (``max + 1 - length``).

    Args:
        length: prompt tokens (with each medium's kept placeholders).
        media: per medium, its first placeholder's offset and its ``(k, 4)`` :func:`media_positions`
            (k = its placeholders), in any order; text runs count up by one from where the last
            medium's extent ends, as in vLLM's ``get_mrope_input_positions``.
    """
    pieces, start, position = [], 0, 0
    for offset, pos in sorted(media, key=lambda m: m[0]):
        text = offset - start
        pieces.append(torch.arange(text).expand(3, -1) + position)
        base = position + text
        pieces.append(pos[:, :3].T + base)
        position = base + int(pos[0, 3]) if pos.numel() else base
        start = offset + pos.shape[0]
    pieces.append(torch.arange(length - start).expand(3, -1) + position)
    positions = torch.cat(pieces, dim=1).long()
    return positions, int(positions.max()) + 1 - length
