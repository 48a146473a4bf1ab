"""``cdpruner``: instruction-conditioned DPP over the projected tokens (CDPruner).

Paper: Zhang et al., "Beyond Attention or Similarity: Maximizing Conditional Diversity for
Token Pruning in MLLMs" (arXiv 2506.10967). Semantics follow Theia-4869/CDPruner,
``llava/model/llava_arch.py::LlavaMetaForCausalLM.encode_images`` (kernel and greedy MAP)
and ``llava/model/multimodal_encoder/clip_encoder.py::CLIPVisionTower.forward`` (embeddings):

1. S = cosine similarity of the *projected* tokens Z ``(N, d_l)`` (float32).
2. Relevance r ``(N,)`` of each token to the instruction, min-max normalised as the
   reference does: ``r = (r - min r + 1e-6) / (max r - min r)``.
3. Conditional kernel ``L = diag(r) S diag(r)`` (paper Eq. 6).
4. Greedy MAP inference of the DPP for exactly k steps, fast form of Chen et al. 2018
   (Alg. 1, incremental Cholesky): each step picks argmax of d_i^2 = det(L_{S+i}) / det(L_S),
   i.e. the token that most increases log det L[S, S]. No early stop (the reference runs
   all k steps).

Relevance on Hugging Face models (the stand-in for CLIP's text tower): the reference embeds
the instruction with CLIP's text tower (one pooled embedding per 77-token segment) and the
patches with CLIP's ``post_layernorm`` + ``visual_projection``, then takes the mean over
segments of the *negated* cosine similarity. HF LLaVA ships no CLIP text tower, so here both
sides live in the language model's input-embedding space: ``ctx.instruction`` ``(T, d_l)``
(the input embeddings of the prompt's text tokens) against ``ctx.projected`` ``(N, d_l)``,
``r_raw(i) = mean_t cos(Z_i, E_t)``. The sign is *not* flipped by default: the authors
report the negative correlation as a CLIP-only phenomenon (CDPruner issues #9, #14); set
``negate_relevance=True`` to flip it as the reference does for CLIP.

Differences from the reference, on purpose (same picks on well-conditioned kernels):
- a constant relevance (max == min) gives r = 1 (plain DPP) instead of dividing by zero;
- picked tokens are masked, and once the best residual d_j^2 is <= 1e-12 (the kernel's
  rank is used up, possible when N > d_l) the pick no longer updates the factor, so the
  remaining picks follow the residuals and k distinct tokens come back (the reference would
  divide by ~0 there and produce NaN).
No instruction: the reference has no unconditional path (it always embeds the text), so
``cdpruner`` raises instead of silently running a plain DPP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..tensors import check_finite
from .base import PruneContext, Selection, register_method
from .options import MethodOptions


@dataclass(frozen=True)
class CDPrunerOptions(MethodOptions):
    """Options of ``cdpruner``.

    Attributes:
        negate_relevance: flip the relevance's sign before normalising (the reference's CLIP choice).
    """

    negate_relevance: bool = False


#: Residual d_j^2 at or below which the kernel counts as exhausted (rank-deficient L).
MIN_RESIDUAL = 1e-12


def relevance(projected: Tensor, instruction: Tensor, *, negate: bool = False) -> Tensor:
    """Min-max normalised relevance of each visual token to the instruction.

    Args:
        projected: ``(N, d)`` visual tokens Z.
        instruction: ``(T, d)`` instruction embeddings E, ``T >= 1``.
        negate: flip the sign before normalising (the reference's CLIP-specific choice).

    Returns:
        ``(N,)`` float32 in (0, 1]: ``(r - min + 1e-6) / (max - min)`` with
        ``r(i) = mean_t cos(Z_i, E_t)``; all ones if r is constant.
    """
    if instruction.dim() != 2 or instruction.shape[0] < 1 or instruction.shape[1] != projected.shape[-1]:
        raise ValueError(
            f"instruction must be (T >= 1, {projected.shape[-1]}), got shape {tuple(instruction.shape)}"
        )
    z = F.normalize(projected.float(), dim=-1)
    e = F.normalize(instruction.float().to(z.device), dim=-1)
    r = (z @ e.T).mean(dim=-1)  # (N,)
    if negate:
        r = -r
    lo, hi = r.min(), r.max()
    if hi <= lo:
        return torch.ones_like(r)
    return (r - lo + 1e-6) / (hi - lo)


def conditional_kernel(projected: Tensor, rel: Tensor) -> Tensor:
    """``L = diag(r) S diag(r)``, S the cosine similarity of ``(N, d)`` tokens -> ``(N, N)`` float32."""
    z = F.normalize(projected.float(), dim=-1)
    sim = z @ z.T  # (N, N)
    return rel[:, None] * sim * rel[None, :]


@torch.no_grad()
def greedy_dpp(kernel: Tensor, k: int) -> Tensor:
    """Greedy MAP inference of a DPP (Chen et al. 2018, Alg. 1), exactly ``k`` steps.

    Keeps c_i (the rows of the incremental Cholesky factor) and d_i^2 = L_ii - ||c_i||^2;
    each step picks j = argmax d_i^2 over unpicked i, then e_i = (L_ji - <c_j, c_i>) / d_j,
    c_i <- [c_i, e_i], d_i^2 <- d_i^2 - e_i^2.

    Args:
        kernel: ``(N, N)`` symmetric PSD kernel L.
        k: tokens to pick, ``1 <= k <= N``.

    Returns:
        ``(k,)`` LongTensor of picks *in pick order* (not sorted).
    """
    n = kernel.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    lk = kernel.float()
    cis = torch.zeros(k, n, device=lk.device)  # (k, N) Cholesky rows
    d2 = torch.diagonal(lk).clone()  # (N,)
    picked = torch.zeros(n, dtype=torch.bool, device=lk.device)
    chosen = torch.empty(k, dtype=torch.long, device=lk.device)
    for t in range(k):
        j = int(d2.masked_fill(picked, float("-inf")).argmax())
        chosen[t] = j
        picked[j] = True
        if t + 1 == k:
            break
        if d2[j] <= MIN_RESIDUAL:  # L is exhausted (rank < t + 1): j adds nothing, factor unchanged
            continue
        e = (lk[j] - cis[:t, j] @ cis[:t]) / d2[j].sqrt()  # (N,)
        cis[t] = e
        d2 = d2 - e.square()
    return chosen


@register_method(
    "cdpruner",
    needs=("instruction",),
    summary="CDPruner: instruction-conditioned DPP (relevance x similarity kernel, greedy MAP)",
    options=CDPrunerOptions,
    reference_unsupported="the reference (Theia-4869/CDPruner, llava_arch.py::encode_images) scores relevance "
    "with CLIP's text tower against CLIP-projected patches; llava-hf checkpoints ship no CLIP text tower, so "
    "zooprune uses the language model's input embeddings instead (exactness is impossible)",
)
@torch.no_grad()
def cdpruner(ctx: PruneContext, k: int) -> Selection:
    """CDPruner for one image: ``projected`` ``(N, d_l)`` + ``instruction`` ``(T, d_l)`` -> k indices.

    ``scores`` is the normalised relevance ``(N,)``.
    """
    ctx.require("instruction", method="cdpruner")
    check_finite("projected", ctx.projected)
    check_finite("instruction", ctx.instruction)
    rel = relevance(ctx.projected, ctx.instruction, negate=ctx.options.negate_relevance)
    picks = greedy_dpp(conditional_kernel(ctx.projected, rel), k)
    return Selection(indices=picks.sort().values, scores=rel)
