"""``pool``: spatial average pooling of the projected token grid down to about k tokens.

No authors' code: this is the plain pooling baseline of the token-pruning literature (e.g.
the "pooling" rows of the VisionZip / DivPrune comparisons), defined here as
``torch.nn.functional.adaptive_avg_pool2d`` over the ``(rows, cols)`` grid of projected
tokens. Pooling averages *projected* tokens (after the projector), so the result lives in
the language model's embedding space like every other method's output.

Output grid (rows', cols'), chosen by :func:`pool_grid`:
- rows' <= rows and cols' <= cols (never upsample), rows' * cols' <= k;
- the product rows' * cols' is as large as possible (closest to k without exceeding it);
- among grids with that product, the aspect ratio closest to the input grid's
  (|log(rows'/cols') - log(rows/cols)|), then fewer rows. E.g. 24x24 -> 8x8 (k=64),
  8x16 (k=128), 12x16 (k=192), 5x6 (k=31).

Cell (i, j) covers rows [floor(i R/r'), ceil((i+1) R/r')) and likewise for columns (the
adaptive-pool rule; cells overlap when the size does not divide). The index reported for a
cell is the token nearest its centre (centre rounded half up); distinct cells give distinct,
row-major increasing indices, so ``indices`` is sorted and aligned with ``tokens``.
With k >= N the method keeps every token unchanged (no ``tokens``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import PruneContext, Selection, register_method


def pool_grid(rows: int, cols: int, k: int) -> tuple[int, int]:
    """The ``(rows', cols')`` output grid for budget ``k`` (see the module docstring)."""
    if rows < 1 or cols < 1:
        raise ValueError(f"grid must be positive, got {(rows, cols)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    target = math.log(rows / cols)
    best: tuple[int, float, int] | None = None  # (-product, aspect error, rows')
    out = (1, 1)
    for r in range(1, rows + 1):
        c = min(cols, k // r)
        if c < 1:
            break
        key = (-(r * c), round(abs(math.log(r / c) - target), 9), r)  # rounded: 3/4 vs 4/3 tie
        if best is None or key < best:
            best, out = key, (r, c)
    return out


def cell_bounds(size: int, out: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each of ``out`` adaptive-pool cells over ``size`` positions."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def cell_centres(size: int, out: int) -> Tensor:
    """``(out,)`` index of the position nearest each cell's centre (half rounds up)."""
    return torch.tensor([(start + end) // 2 for start, end in cell_bounds(size, out)], dtype=torch.long)


@torch.no_grad()
def pool_tokens(projected: Tensor, grid: tuple[int, int], k: int) -> tuple[Tensor, Tensor]:
    """Average-pool ``(N, d)`` grid tokens to at most ``k``.

    Args:
        projected: ``(N, d)`` tokens in row-major grid order.
        grid: ``(rows, cols)`` with ``rows * cols == N``.
        k: budget, ``k >= 1``.

    Returns:
        ``(tokens, indices)``: ``(rows' * cols', d)`` pooled tokens (row-major, dtype of
        ``projected``; averaged in float32) and ``(rows' * cols',)`` LongTensor of the token
        nearest each cell centre, sorted ascending.
    """
    rows, cols = grid
    n, d = projected.shape
    if rows * cols != n:
        raise ValueError(f"grid {grid} has {rows * cols} cells but there are {n} tokens")
    out_r, out_c = pool_grid(rows, cols, k)
    x = projected.float().T.reshape(d, rows, cols)  # (d, rows, cols)
    pooled = F.adaptive_avg_pool2d(x, (out_r, out_c))  # (d, rows', cols')
    tokens = pooled.reshape(d, out_r * out_c).T.to(projected.dtype)  # (rows' * cols', d)
    r_idx = cell_centres(rows, out_r)
    c_idx = cell_centres(cols, out_c)
    indices = (r_idx[:, None] * cols + c_idx[None, :]).reshape(-1).to(projected.device)
    return tokens, indices


@register_method(
    "pool", needs=("grid",), summary="spatial average pooling of the token grid to ~k tokens", merges_tokens=True
)
def pool(ctx: PruneContext, k: int) -> Selection:
    """Pool ``ctx.projected`` ``(N, d_l)`` on ``ctx.grid`` to ``rows' * cols' <= k`` merged tokens."""
    if ctx.grid is None:
        raise ValueError(
            "method 'pool' needs the token grid (rows, cols), which this model's adapter did not provide "
            "(models whose visual tokens are not a single grid cannot be pooled)"
        )
    if k >= ctx.num_tokens:  # keep-all: the pooling would be the identity
        return Selection(indices=torch.arange(ctx.num_tokens, device=ctx.projected.device))
    tokens, indices = pool_tokens(ctx.projected, ctx.grid, k)
    return Selection(indices=indices, tokens=tokens)
