"""Tensor helpers shared by methods and adapters (pure torch, no transformers)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def check_finite(name: str, tensor: Tensor) -> None:
    """Raise ``ValueError`` naming ``name`` if ``tensor`` holds NaN or inf."""
    if not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).sum().item()
        raise ValueError(f"{name} contains {bad} NaN/inf values; cannot score tokens")


def cosine_distance(tokens: Tensor) -> Tensor:
    """``(..., N, d)`` -> ``(..., N, N)`` pairwise cosine distance 1 - cos (float32)."""
    z = F.normalize(tokens.float(), dim=-1)
    return 1.0 - z @ z.transpose(-1, -2)


def float32_projector(projector: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Return ``projector`` itself if it computes in float32 or wider, else a float32 copy of the module."""
    if isinstance(projector, nn.Module):
        if any(p.is_floating_point() and p.element_size() < 4 for p in projector.parameters()):
            return copy.deepcopy(projector).float().eval()
    return projector


def sorted_unique(indices: Tensor) -> Tensor:
    """``(k,)`` -> sorted ascending LongTensor (the original token order)."""
    return torch.sort(indices.long()).values


def at_least_float32(t: Tensor) -> Tensor:
    """``t`` in float32, or in its own dtype if wider (float64 inputs are computed in float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))
