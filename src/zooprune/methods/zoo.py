"""ZOO-Prune: zeroth-order sensitivity at the projector x diversity (SADS).

Paper: Kim et al., "ZOO-Prune: Training-Free Token Pruning via Zeroth-Order Gradient
Estimation in Vision-Language Models" (arXiv 2509.24837). Reference code: AIM-SKKU/ZOO-Prune,
``LLaVA/llava/model/llava_arch.py`` (``select_tokens_sads`` and the scoring block of
``prepare_inputs_labels_for_multimodal``). Differences from the reference, on purpose: scores
are computed in float32 whatever the model dtype, every draw is seeded, batches are
supported, and the greedy selection keeps a running minimum (same picks, O(k N)).
``fidelity="reference"`` reproduces the reference instead (:func:`zoo_reference`): the central
estimator in float16, SADS in float16 with the reference's distance and tie rules, and on
LLaVA-NeXT its per-crop budget and newline handling (``adapters/groups.py::select_frames``);
``docs/fidelity.md`` lists every point.

The sensitivity estimators (the paper's central difference, jvp, closed form) live in
``estimators.py``; this file holds the selection (SADS), the typed options and the two
registered methods (``zoo`` and its sensitivity-only ablation ``zoo-sensitivity``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..tensors import check_finite, sorted_unique
from ..timing import timed
from .base import PruneContext, Selection, register_method
from .estimators import (
    DEFAULT_ESTIMATOR,
    draw_directions,
    estimate_sensitivity,
    get_estimator,
    mlp_structure,
    sensitivity,
)
from .options import MethodOptions
from .zoo_reference import lowrank_projector, reference_sensitivity

__all__ = ["ZooOptions", "draw_directions", "normalize_scores", "select", "sensitivity"]


@dataclass(frozen=True)
class ZooOptions(MethodOptions):
    """Options of ``zoo`` and ``zoo-sensitivity``.

    Attributes:
        estimator: ``central`` (the paper's), ``jvp`` or ``closed-form`` (see ``estimators.py``);
            None = the library default (closed form), or ``jvp`` when the projector is not a
            two-layer MLP (e.g. Qwen2-VL's patch merger).
        num_directions: m, random directions (paper default 64); ``central`` and ``jvp`` only.
        step: h, the finite-difference step (paper default 0.01); ``central`` only.
        chunk_size: directions (``central``, ``jvp``) or tokens (``closed-form``) per pass.
        projector_rank: score through a rank-r SVD factorisation of the two-layer projector instead
            of the projector (the reference's LLaVA-NeXT setting uses r = 128; ``central`` / ``jvp``).
        lowrank: which weights the rank-r projector factorises: ``trained`` (the model's; what the
            paper describes) or ``as-constructed`` (freshly initialised ones, seeded: what the
            reference code factorises; see ``zoo_reference.lowrank_projector``).
    """

    estimator: str | None = None
    num_directions: int = 64
    step: float = 0.01
    chunk_size: int | None = None
    projector_rank: int | None = None
    lowrank: Literal["trained", "as-constructed"] = "trained"

    def __post_init__(self) -> None:
        if self.estimator is not None:
            object.__setattr__(self, "estimator", get_estimator(self.estimator).name)
        if self.num_directions < 1:
            raise ValueError(f"num_directions must be >= 1, got {self.num_directions}")
        if not self.step > 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.projector_rank is not None and self.projector_rank < 1:
            raise ValueError(f"projector_rank must be >= 1, got {self.projector_rank}")

    def ignored(self, given: frozenset[str]) -> dict[str, str]:
        est = get_estimator(self.estimator or DEFAULT_ESTIMATOR)
        which = f"the {est.name} estimator" + ("" if self.estimator else " (the default)")
        out = {}
        if "num_directions" in given and not est.uses_directions:
            out["num_directions"] = f"{which} draws no directions; choose estimator='central' (the paper's) or 'jvp'"
        if "step" in given and not est.uses_step:
            out["step"] = f"{which} takes no finite-difference step; choose estimator='central' (the paper's)"
        if "projector_rank" in given and est.name == "closed-form":
            out["projector_rank"] = f"{which} reads the full projector; choose estimator='central' or 'jvp'"
        if "lowrank" in given and self.projector_rank is None:
            out["lowrank"] = "it only applies with projector_rank (a rank-r projector)"
        return out


def normalize_scores(scores: Tensor) -> Tensor:
    """Min-max normalise over the last dim (paper Eq. 4): (S - min) / (max - min + 1e-8); 1 if constant."""
    lo = scores.amin(dim=-1, keepdim=True)
    hi = scores.amax(dim=-1, keepdim=True)
    out = (scores - lo) / (hi - lo + 1e-8)
    return torch.where(hi > lo, out, torch.ones_like(out))


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


def resolve_estimator(options: ZooOptions, projector: object) -> str:
    """The estimator that runs: the one named, else the default (closed form), or ``jvp`` when the
    projector is not a two-layer MLP (e.g. Qwen2-VL's patch merger, LayerNorm first)."""
    if options.estimator:
        return options.estimator
    if DEFAULT_ESTIMATOR == "closed-form":
        try:
            mlp_structure(projector)
        except ValueError:
            return "jvp"
    return DEFAULT_ESTIMATOR


def scoring_projector(ctx: PruneContext) -> object:
    """``ctx.projector``, or its rank-r factorisation when the ``projector_rank`` option is set."""
    opts: ZooOptions = ctx.options
    if opts.projector_rank is None:
        return ctx.projector
    seed = int(ctx.generator.initial_seed()) if ctx.generator is not None else 0
    return lowrank_projector(ctx.projector, opts.projector_rank, opts.lowrank, seed)


def _reference_distance(z: Tensor, form: str) -> Tensor:
    """``(N, N)`` float16 cosine distance ``1 - cos`` computed as the reference computes it.

    ``form="cosine_similarity"``: ``llava_arch.py::select_tokens_sads`` (``F.cosine_similarity`` of
    ``(N, 1, d)`` against ``(1, N, d)``; here row blocks at a time, same values);
    ``form="normalized_mm"``: ``llava_arch_llava_next_7b.py::pairwise_cosine_similarity`` (rows divided
    by their norm, then one matrix product).
    """
    if form == "normalized_mm":
        unit = z / z.norm(dim=1, keepdim=True)
        return 1.0 - torch.mm(unit, unit.t())
    n, d = z.shape
    rows = max(1, (1 << 24) // max(1, n * d))
    out = torch.empty(n, n, dtype=z.dtype, device=z.device)
    for start in range(0, n, rows):
        block = z[start : start + rows].unsqueeze(1)  # (r, 1, d)
        out[start : start + rows] = 1.0 - F.cosine_similarity(block, z.unsqueeze(0), dim=-1)
    return out


@torch.no_grad()
def select_reference(projected: Tensor, scores: Tensor, k: int, form: str = "cosine_similarity") -> Tensor:
    """SADS as the reference code runs it (``llava_arch.py::select_tokens_sads``; per crop
    ``llava_arch_llava_next_7b.py::select_tokens_sads_multi_frames``): everything in float16 (the
    reference model's dtype), ``S^ = (S - min) / (max - min + 1e-8)`` (ones if constant), first pick
    argmax S^, then argmax of ``min_{picked} D * S^`` over unpicked tokens; ``torch.argmax`` ties go
    to the lowest index (fp16 makes ties common). The minimum over the picked rows is kept as a
    running minimum (``min`` is exact, so the values equal the reference's re-reduction).

    Args:
        projected: ``(N, d)`` projected tokens (rounded to fp16).
        scores: ``(N,)`` sensitivities (rounded to fp16).
        k: tokens to keep, ``1 <= k <= N``.
        form: the reference's distance computation (see :func:`_reference_distance`).

    Returns:
        ``(k,)`` sorted LongTensor.
    """
    z, s = projected.half(), scores.half()
    n = z.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    dist = _reference_distance(z, form)  # (N, N) fp16
    if s.max() > s.min():
        weight = (s - s.min()) / (s.max() - s.min() + 1e-8)
    else:
        weight = torch.ones_like(s)
    picked = torch.zeros(n, dtype=torch.bool, device=z.device)
    chosen = torch.empty(k, dtype=torch.long, device=z.device)
    min_dist = None
    for t in range(k):
        gain = weight if min_dist is None else min_dist * weight
        idx = int(torch.argmax(gain.masked_fill(picked, float("-inf"))))
        chosen[t] = idx
        picked[idx] = True
        min_dist = dist[idx] if min_dist is None else torch.minimum(min_dist, dist[idx])
    return chosen.sort().values


def zoo_reference(ctx: PruneContext, k: int) -> Selection:
    """``fidelity="reference"``: :func:`reference_sensitivity` (fp16 central difference through the
    projector, or the rank-r one) then :func:`select_reference`. Within a crop of a multi-crop image
    (``ctx.group`` set, LLaVA-NeXT) the distance follows ``select_tokens_sads_multi_frames``."""
    ctx.require("features", "projector", method="zoo")
    opts: ZooOptions = ctx.options
    timings: dict[str, float] = {}
    with timed(timings, "score"):
        scores = reference_sensitivity(
            ctx.features,
            scoring_projector(ctx),
            num_directions=opts.num_directions,
            step=opts.step,
            generator=ctx.generator,
            chunk_size=opts.chunk_size,
        )  # (N,) fp16
    with timed(timings, "select"):
        form = "cosine_similarity" if ctx.group is None else "normalized_mm"
        kept = select_reference(ctx.projected, scores, k, form)
    rank = "" if opts.projector_rank is None else f"@rank-{opts.projector_rank}"
    return Selection(indices=kept, scores=scores.float(), timings=timings, estimator=REFERENCE_ESTIMATOR + rank)


#: How reports name the reference's estimator: the paper's central difference, computed in fp16.
REFERENCE_ESTIMATOR = "central-fp16"


def estimator_name(ctx: PruneContext) -> str:
    """The estimator that scores ``ctx`` (as reports name it; a rank-r projector adds ``@rank-r``)."""
    opts: ZooOptions = ctx.options
    name = resolve_estimator(opts, scoring_projector(ctx))
    return name if opts.projector_rank is None else f"{name}@rank-{opts.projector_rank}"


def _scores(ctx: PruneContext, method: str) -> Tensor:
    """Sensitivities ``(N,)`` of ``ctx.features`` through ``ctx.projector`` (see ``estimators.py``)."""
    ctx.require("features", "projector", method=method)
    opts: ZooOptions = ctx.options
    projector = scoring_projector(ctx)
    return estimate_sensitivity(
        ctx.features,
        projector,
        resolve_estimator(opts, projector),
        num_directions=opts.num_directions,
        step=opts.step,
        generator=ctx.generator,
        chunk_size=opts.chunk_size,
    )


@register_method(
    "zoo",
    needs=("features", "projector"),
    summary="ZOO-Prune: zeroth-order projector sensitivity x diversity (SADS)",
    options=ZooOptions,
    takes_estimator=True,
    aliases=("zoo-prune", "zooprune"),
    reference="AIM-SKKU/ZOO-Prune LLaVA/llava/model/llava_arch.py::select_tokens_sads and the scoring block of "
    "prepare_inputs_labels_for_multimodal (LLaVA-NeXT: llava_arch_llava_next_7b.py)",
    reference_crops="frames",
    reference_options=(("estimator", "central"),),
)
def zoo(ctx: PruneContext, k: int) -> Selection:
    """ZOO-Prune for one image: sensitivity through the projector, then SADS selection
    (``fidelity="reference"``: :func:`zoo_reference`)."""
    if ctx.fidelity == "reference":
        return zoo_reference(ctx, k)
    timings: dict[str, float] = {}
    with timed(timings, "score"):
        scores = _scores(ctx, "zoo")  # (N,)
    with timed(timings, "select"):
        kept = select(ctx.projected, scores, k)  # (k,)
    return Selection(indices=kept, scores=scores, timings=timings, estimator=estimator_name(ctx))


@register_method(
    "zoo-sensitivity",
    needs=("features", "projector"),
    summary="ablation: top-k by zeroth-order sensitivity alone (no diversity)",
    options=ZooOptions,
    takes_estimator=True,
    reference_unsupported="the reference code has no sensitivity-only path (it is the paper's ablation)",
)
def zoo_sensitivity(ctx: PruneContext, k: int) -> Selection:
    """Ablation of ZOO-Prune: keep the k most sensitive tokens, no diversity term."""
    timings: dict[str, float] = {}
    with timed(timings, "score"):
        scores = _scores(ctx, "zoo-sensitivity")  # (N,)
    with timed(timings, "select"):
        kept = sorted_unique(scores.topk(k).indices)
    return Selection(indices=kept, scores=scores, timings=timings, estimator=estimator_name(ctx))
