"""ZOO-Prune: zeroth-order sensitivity at the projector x diversity (SADS).

Paper: Kim et al., "ZOO-Prune: Training-Free Token Pruning via Zeroth-Order Gradient
Estimation in Vision-Language Models" (arXiv 2509.24837). Reference code: AIM-SKKU/ZOO-Prune,
``LLaVA/llava/model/llava_arch.py`` (``select_tokens_sads`` and the scoring block of
``prepare_inputs_labels_for_multimodal``). Differences from the reference, on purpose: scores
are computed in float32 whatever the model dtype, every draw is seeded, batches are
supported, and the greedy selection keeps a running minimum (same picks, O(k N)).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..report import timed
from .base import PruneContext, Selection, register_method, sorted_unique

#: Elements (B * chunk * N * (d_v + d_l)) one perturbation chunk may hold; ~64 MiB in float32.
CHUNK_ELEMENTS = 1 << 24


def float32_projector(projector: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Return ``projector`` itself if it computes in float32 or wider, else a float32 copy of the module."""
    if isinstance(projector, nn.Module):
        if any(p.is_floating_point() and p.element_size() < 4 for p in projector.parameters()):
            return copy.deepcopy(projector).float().eval()
    return projector


def draw_directions(
    num_directions: int,
    dim: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """``(m, d_v)`` unit-norm Gaussian directions (paper Eq. 2), drawn on the CPU from ``generator``.

    With ``generator=None`` a fresh generator seeded with 0 is used, so the draw is deterministic.
    """
    if num_directions < 1:
        raise ValueError(f"num_directions must be >= 1, got {num_directions}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    u = torch.randn(num_directions, dim, generator=generator, dtype=torch.float32)
    return (u / u.norm(dim=-1, keepdim=True)).to(device)


def check_finite(name: str, tensor: Tensor) -> None:
    """Raise ``ValueError`` naming ``name`` if ``tensor`` holds NaN or inf."""
    if not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).sum().item()
        raise ValueError(f"{name} contains {bad} NaN/inf values; cannot score tokens")


@torch.no_grad()
def sensitivity(
    features: Tensor,
    projector: Callable[[Tensor], Tensor],
    *,
    num_directions: int = 64,
    step: float = 0.01,
    generator: torch.Generator | None = None,
    directions: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Zeroth-order sensitivity S of each token through the projector (paper Eqs. 1-4, un-normalised).

    S(i) = (1/m) * sum_j || (M(x_i + h u_j) - M(x_i - h u_j)) / (2h) ||_2, with one bank of m
    unit directions shared by every token (and every image of a batch).

    Args:
        features: ``(N, d_v)`` or ``(B, N, d_v)`` pre-projector features.
        projector: callable ``(..., d_v) -> (..., d_l)``, token-wise. An ``nn.Module`` with
            half-precision weights (bf16 / fp16) is run as a float32 copy.
        num_directions: m, the number of random directions (paper default 64).
        step: h, the finite-difference step (paper default 0.01).
        generator: CPU generator the directions are drawn from (a fresh one seeded 0 if None).
        directions: ``(m, d_v)`` directions to use as they are (assumed unit norm) instead of drawing.
        chunk_size: directions per projector call. Peak extra memory is about
            ``4 * B * chunk_size * N * (2 d_v + 2 d_l + d_hidden)`` bytes; by default chunk_size is
            the largest value with ``B * chunk_size * N * (d_v + d_l) <= 2**24``.

    Returns:
        ``(N,)`` or ``(B, N)`` sensitivities (higher = more sensitive), float32 (float64 for
        float64 features with a float64 projector: used to check convergence to ``E||J u||``).
    """
    if features.dim() not in (2, 3):
        raise ValueError(f"features must be (N, d_v) or (B, N, d_v), got shape {tuple(features.shape)}")
    if step <= 0:
        raise ValueError(f"step must be > 0, got {step}")
    check_finite("features", features)
    batched = features.dim() == 3
    work = torch.float64 if features.dtype == torch.float64 else torch.float32  # never below float32
    x = (features if batched else features.unsqueeze(0)).to(work)  # (B, N, d_v)
    bsz, n, d_v = x.shape
    if directions is None:
        directions = draw_directions(num_directions, d_v, generator, x.device)
    elif directions.dim() != 2 or directions.shape[1] != d_v:
        raise ValueError(f"directions must be (m, {d_v}), got shape {tuple(directions.shape)}")
    u = directions.to(device=x.device, dtype=work)  # (m, d_v)
    m = u.shape[0]
    proj = float32_projector(projector)

    if chunk_size is None:
        d_l = proj(x[:1, :1]).shape[-1]
        chunk_size = max(1, CHUNK_ELEMENTS // (bsz * n * (d_v + d_l)))
    total = torch.zeros(bsz, n, dtype=work, device=x.device)
    for start in range(0, m, chunk_size):
        hu = step * u[start : start + chunk_size, None, None, :]  # (c, 1, 1, d_v)
        plus = proj(x.unsqueeze(0) + hu)  # (c, B, N, d_l)
        minus = proj(x.unsqueeze(0) - hu)  # (c, B, N, d_l)
        total += ((plus - minus).to(work) / (2.0 * step)).norm(dim=-1).sum(dim=0)  # (B, N)
    scores = total / m
    return scores if batched else scores[0]


def normalize_scores(scores: Tensor) -> Tensor:
    """Min-max normalise over the last dim (paper Eq. 4): (S - min) / (max - min + 1e-8); 1 if constant."""
    lo = scores.amin(dim=-1, keepdim=True)
    hi = scores.amax(dim=-1, keepdim=True)
    out = (scores - lo) / (hi - lo + 1e-8)
    return torch.where(hi > lo, out, torch.ones_like(out))


def cosine_distance(tokens: Tensor) -> Tensor:
    """``(..., N, d)`` -> ``(..., N, N)`` pairwise cosine distance 1 - cos (float32)."""
    z = F.normalize(tokens.float(), dim=-1)
    return 1.0 - z @ z.transpose(-1, -2)


@torch.no_grad()
def select(projected: Tensor, scores: Tensor, k: int) -> Tensor:
    """Sensitivity-aware diverse selection (SADS, paper Eqs. 6-7).

    First pick = argmax of the normalised scores; then repeatedly the unpicked token maximising
    ``S^(i) * min_{j picked} (1 - cos(Z_i, Z_j))``. The minimum is kept as a running minimum
    updated with the newest pick only (identical picks to recomputing it), and only the k
    distance rows of the picks are computed: O(k N d), not the O(N^2 d) full matrix (for 320 of
    2880 tokens, 9x fewer multiply-adds). Ties go to the lowest index.

    Args:
        projected: ``(N, d)`` or ``(B, N, d)`` projected tokens Z.
        scores: ``(N,)`` or ``(B, N)`` raw sensitivities (normalised here per row).
        k: number of tokens to keep, 1 <= k; k >= N keeps everything.

    Returns:
        ``(k,)`` or ``(B, k)`` LongTensor of kept indices, sorted ascending.
    """
    batched = projected.dim() == 3
    z = projected if batched else projected.unsqueeze(0)  # (B, N, d)
    s = scores if batched else scores.unsqueeze(0)  # (B, N)
    if s.shape != z.shape[:2]:
        raise ValueError(f"scores {tuple(scores.shape)} do not match projected {tuple(projected.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    check_finite("scores", s)
    bsz, n, _ = z.shape
    if k >= n:
        idx = torch.arange(n, device=z.device).expand(bsz, n)
        return idx if batched else idx[0]
    weight = normalize_scores(s.float())  # (B, N)
    unit = F.normalize(z.float(), dim=-1)  # (B, N, d)
    rows = torch.arange(bsz, device=z.device)
    picked = torch.zeros(bsz, n, dtype=torch.bool, device=z.device)
    chosen = torch.empty(bsz, k, dtype=torch.long, device=z.device)
    nxt = weight.argmax(dim=-1)  # (B,)  first pick: the most sensitive token
    min_dist = torch.full((bsz, n), float("inf"), device=z.device)
    for t in range(k):
        chosen[:, t] = nxt
        picked[rows, nxt] = True
        dist = 1.0 - (unit @ unit[rows, nxt].unsqueeze(-1)).squeeze(-1)  # (B, N) distance to the pick
        min_dist = torch.minimum(min_dist, dist)  # running min over picked
        if t + 1 < k:
            gain = (weight * min_dist).masked_fill(picked, float("-inf"))
            nxt = gain.argmax(dim=-1)
    out = chosen.sort(dim=-1).values
    return out if batched else out[0]


def _scores(ctx: PruneContext, method: str) -> Tensor:
    """Sensitivities ``(N,)`` with ``ctx.options["estimator"]`` (see ``estimators.py``; default there).

    Without an explicit estimator, a projector that is not a two-layer MLP (e.g. Qwen2-VL's patch
    merger, LayerNorm first) uses ``jvp`` instead of the closed form, which needs that structure.
    """
    from .estimators import DEFAULT_ESTIMATOR, estimate_sensitivity, mlp_structure  # estimators imports us

    ctx.require("features", "projector", method=method)
    opts = ctx.options
    name = opts.get("estimator")
    if not name:
        name = DEFAULT_ESTIMATOR
        if name == "closed-form":
            try:
                mlp_structure(ctx.projector)
            except ValueError:
                name = "jvp"
    return estimate_sensitivity(
        ctx.features,
        ctx.projector,
        str(name),
        num_directions=int(opts.get("num_directions", 64)),
        step=float(opts.get("step", 0.01)),
        generator=ctx.generator,
        chunk_size=opts.get("chunk_size"),
    )


@register_method(
    "zoo",
    needs=("features", "projector"),
    summary="ZOO-Prune: zeroth-order projector sensitivity x diversity (SADS)",
    aliases=("zoo-prune", "zooprune"),
)
def zoo(ctx: PruneContext, k: int) -> Selection:
    """ZOO-Prune for one image: sensitivity through the projector, then SADS selection."""
    timings: dict[str, float] = {}
    with timed(timings, "score"):
        scores = _scores(ctx, "zoo")  # (N,)
    with timed(timings, "select"):
        kept = select(ctx.projected, scores, k)  # (k,)
    return Selection(indices=kept, scores=scores, timings=timings)


@register_method(
    "zoo-sensitivity",
    needs=("features", "projector"),
    summary="ablation: top-k by zeroth-order sensitivity alone (no diversity)",
)
def zoo_sensitivity(ctx: PruneContext, k: int) -> Selection:
    """Ablation of ZOO-Prune: keep the k most sensitive tokens, no diversity term."""
    timings: dict[str, float] = {}
    with timed(timings, "score"):
        scores = _scores(ctx, "zoo-sensitivity")  # (N,)
    with timed(timings, "select"):
        kept = sorted_unique(scores.topk(k).indices)
    return Selection(indices=kept, scores=scores, timings=timings)
