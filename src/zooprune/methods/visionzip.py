"""``visionzip``: dominant tokens by [CLS] attention + contextual tokens merged by key similarity.

Paper: Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language
Models" (CVPR 2025, arXiv 2412.04467). Semantics follow dvlab-research/VisionZip,
``visionzip/clip_encoder.py`` (``CLIPVisionTower_VisionZip.forward``) and
``visionzip/utils.py`` (``CLIPAttention_forward`` storing the head-averaged keys as the
merge ``metric``), all at the vision layer LLaVA reads (``hidden_states[-2]``):

1. Dominant: the top-k_d patches by [CLS] attention, heads summed (= averaged for ranking).
2. The other N - k_d patches, in original order, are split into k_c *targets* at uniform
   stride ``step = max(1, R // k_c)``, ``targets = arange(0, R, step)[:k_c]`` (R = N - k_d),
   and the rest, each assigned to the target of highest cosine similarity of the
   head-averaged attention keys (argmax; ties to the lowest target).
3. Contextual token j = ``h[target_j] + sum(h[assigned to j]) / max(count_j, 1)``: the
   reference adds the *mean of the assigned tokens* to the target's own hidden state (it is
   not the mean over target and members; with no member the token is the target itself).
   ``merge="mean"`` uses the plain mean over target and members instead.
4. Output: dominant tokens in original order, then the k_c contextual tokens in target order.
   With k >= N every token is kept unchanged, in order (nothing to merge).

Where the merge happens: VisionZip merges vision-encoder hidden states *before* the
projector. Here we do the same: the merge averages ``ctx.features`` ``(N, d_v)`` (the
projector's input) and the merged rows go through ``ctx.projector`` (float32); dominant
tokens are ``ctx.projected`` rows as they are. (For a nonlinear projector, merging the
projected tokens instead would be a different method.)

Differences from the reference, on purpose:
- the [CLS] token is not kept: here the k_d dominant tokens are all patches, k_d + k_c = k.
  The reference keeps [CLS] as one of its dominant tokens and takes only ``dominant - 1``
  patches by attention: its "64" is [CLS] + 53 dominant patches + 10 contextual tokens (it
  also counts to 64). ``fidelity="reference"`` does the same (:func:`visionzip_reference`),
  with [CLS] first, as the reference orders them.
- split: the reference uses 54+10 / 108+20 / 162+30 for 64 / 128 / 192 tokens, i.e.
  k_c = 5k/32; other k use k_c = round(5k/32) (half up), at least 1 when k >= 2 (k_c = 0 for k = 1).
  Override with the ``dominant`` and/or ``contextual`` options.
- keys: the reference uses keys averaged over heads, ``(N, head_dim)``. ``ctx.keys`` may be
  ``(N, H, head_dim)`` (averaged here), or ``(N, H * head_dim)`` with the ``num_heads`` option
  (reshaped and averaged); ``(N, d_k)`` without ``num_heads`` is used as it is (cosine over
  the concatenated heads, which ranks targets differently from the head mean).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..tensors import float32_projector, sorted_unique
from .base import PruneContext, Selection, register_method
from .options import MethodOptions


@dataclass(frozen=True)
class VisionZipOptions(MethodOptions):
    """Options of ``visionzip`` (see the module docstring).

    Attributes:
        dominant / contextual: override the dominant / contextual split of k (default 54+10 per 64).
        merge: ``reference`` (target + mean of its members, as the authors' code) or ``mean``.
        num_heads: split ``(N, H * d_h)`` keys into heads before averaging them.
    """

    dominant: int | None = None
    contextual: int | None = None
    merge: Literal["reference", "mean"] = "reference"
    num_heads: int | None = None


def dominant_contextual_split(
    k: int, n: int, dominant: int | None = None, contextual: int | None = None
) -> tuple[int, int]:
    """``(k_d, k_c)`` with ``k_d + k_c == k`` (paper split 54+10 per 64 unless overridden)."""
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    if dominant is not None and contextual is not None and dominant + contextual != k:
        raise ValueError(f"dominant ({dominant}) + contextual ({contextual}) must equal k ({k})")
    if dominant is not None:
        k_c = k - int(dominant)
    elif contextual is not None:
        k_c = int(contextual)
    else:
        k_c = 0 if k == 1 else max(1, int(k * 10 / 64 + 0.5))  # 10 per 64, half rounds up
    if not 0 <= k_c <= k - 1:
        raise ValueError(
            f"need 1 <= dominant <= k and 0 <= contextual <= k - 1 (k={k}), got contextual={k_c}"
        )
    return k - k_c, k_c


def head_mean_keys(keys: Tensor, num_heads: int | None) -> Tensor:
    """``(N, H, d_h)`` or ``(N, H*d_h)`` + ``num_heads`` -> ``(N, d_h)`` head-averaged keys."""
    if keys.dim() == 3:
        return keys.float().mean(dim=1)
    if keys.dim() != 2:
        raise ValueError(f"keys must be (N, d_k) or (N, H, d_h), got shape {tuple(keys.shape)}")
    if num_heads is None:
        return keys.float()
    n, d_k = keys.shape
    if d_k % num_heads:
        raise ValueError(f"keys dim {d_k} is not divisible by num_heads={num_heads}")
    return keys.float().reshape(n, num_heads, d_k // num_heads).mean(dim=1)


def contextual_groups(metric: Tensor, k_c: int) -> tuple[Tensor, Tensor]:
    """Targets and assignment among R remaining tokens (reference step 2).

    Args:
        metric: ``(R, d)`` merge metric (keys) of the remaining tokens, original order.
        k_c: number of contextual tokens, ``1 <= k_c <= R``.

    Returns:
        ``(targets, assign)``: ``(k_c,)`` positions (into the R rows) of the targets, and
        ``(R,)`` group of every row in ``[0, k_c)`` (a target is in its own group).
    """
    r = metric.shape[0]
    step = max(1, r // k_c)
    targets = torch.arange(0, r, step, device=metric.device)[:k_c]  # uniform stride
    z = F.normalize(metric.float(), dim=-1)
    assign = (z @ z[targets].T).argmax(dim=-1)  # (R,) most similar target
    assign[targets] = torch.arange(k_c, device=metric.device)
    return targets, assign


def merge_groups(hidden: Tensor, targets: Tensor, assign: Tensor, mode: str = "reference") -> Tensor:
    """Merge ``(R, d)`` rows into ``(k_c, d)`` contextual rows (reference step 3).

    ``mode="reference"``: ``hidden[target_j] + mean(hidden[members_j other than the target])``
    (0 when there are none). ``mode="mean"``: mean over the target and its members.
    """
    k_c = targets.shape[0]
    onehot = F.one_hot(assign, k_c).to(hidden.dtype)  # (R, k_c)
    if mode == "reference":
        onehot[targets, torch.arange(k_c, device=hidden.device)] = 0  # members other than the target
        counts = onehot.sum(dim=0).clamp(min=1).unsqueeze(-1)  # (k_c, 1)
        return hidden[targets] + onehot.T @ hidden / counts
    if mode == "mean":
        return onehot.T @ hidden / onehot.sum(dim=0).unsqueeze(-1)
    raise ValueError(f"visionzip merge must be 'reference' or 'mean', got {mode!r}")


@torch.no_grad()
def visionzip_reference(ctx: PruneContext, k: int) -> Selection:
    """VisionZip as ``CLIPVisionTower_forward`` (dvlab-research/VisionZip ``visionzip/utils.py``) runs
    it for LLaVA-1.5 (``fidelity="reference"``): the split gives ``(dominant, contextual)`` (54 + 10 for
    64); the reference passes ``dominant - 1`` to its top-k, so the dominant tokens are [CLS] plus the
    ``dominant - 1`` patches of highest [CLS] attention (original order), then the contextual tokens.

    Returns ``indices`` = the ``(dominant - 1,)`` kept patches, ``tokens`` = ``(k, d_l)``: projected
    [CLS], the dominant patches, the contextual tokens (the reference's order).
    """
    ctx.require("cls_attention", "keys", "features", "projector", "cls_feature", method="visionzip")
    n = ctx.num_tokens
    opts: VisionZipOptions = ctx.options
    k_d, k_c = dominant_contextual_split(k, n, opts.dominant, opts.contextual)  # k < N (keep-all: no call)
    scores = ctx.cls_attention.float().reshape(n)
    patches = k_d - 1  # the reference's topk(dominant - 1): [CLS] is the first dominant token
    dominant = sorted_unique(scores.topk(patches).indices) if patches else torch.zeros(0, dtype=torch.long)
    proj32 = float32_projector(ctx.projector)
    cls_token = proj32(ctx.cls_feature.float()[None]).to(ctx.projected.dtype)  # (1, d_l)
    tokens = torch.cat([cls_token, ctx.projected[dominant]], dim=0)
    if k_c:
        rest = torch.ones(n, dtype=torch.bool, device=scores.device)
        rest[dominant] = False
        rest_idx = rest.nonzero().squeeze(-1)  # (R,) original order
        metric = head_mean_keys(ctx.keys, opts.num_heads)[rest_idx]
        targets, assign = contextual_groups(metric, k_c)
        merged = merge_groups(ctx.features.float()[rest_idx], targets, assign, "reference")
        tokens = torch.cat([tokens, proj32(merged).to(tokens.dtype)], dim=0)
    return Selection(indices=dominant.long(), scores=scores, tokens=tokens)


@register_method(
    "visionzip",
    needs=("cls_attention", "keys", "features", "projector"),
    summary="VisionZip: [CLS]-attention dominant tokens + key-similarity merged contextual tokens",
    options=VisionZipOptions,
    merges_tokens=True,
    reference="dvlab-research/VisionZip visionzip/utils.py::CLIPVisionTower_forward (LLaVA-1.5)",
    reference_options=(("merge", "reference"),),
)
@torch.no_grad()
def visionzip(ctx: PruneContext, k: int) -> Selection:
    """VisionZip for one image.

    Reads ``cls_attention`` ``(N,)``, ``keys`` ``(N, d_k)``, ``features`` ``(N, d_v)`` and the
    projector. Returns ``indices`` = the ``(k_d,)`` dominant tokens (sorted), ``tokens`` =
    ``(k_d + k_c, d_l)`` dominant rows of ``projected`` then the projected contextual tokens,
    ``scores`` = the [CLS] attention.
    """
    if ctx.fidelity == "reference":
        return visionzip_reference(ctx, k)
    ctx.require("projector", method="visionzip")
    n = ctx.num_tokens
    attn, keys, feats = ctx.checked("cls_attention", "keys", "features", method="visionzip")
    if k >= n:  # keep-all: nothing to merge, tokens stay as the model would see them
        return Selection(indices=torch.arange(n, device=ctx.projected.device), scores=attn.float().reshape(n))
    opts: VisionZipOptions = ctx.options
    k_d, k_c = dominant_contextual_split(k, n, opts.dominant, opts.contextual)

    scores = attn.float().reshape(n)
    dominant = sorted_unique(scores.topk(k_d).indices)  # (k_d,), k_d >= 1
    tokens = ctx.projected[dominant]  # (k_d, d_l), original order
    if k_c:
        rest = torch.ones(n, dtype=torch.bool, device=scores.device)
        rest[dominant] = False
        rest_idx = rest.nonzero().squeeze(-1)  # (R,) original order
        metric = head_mean_keys(keys, opts.num_heads)[rest_idx]  # (R, d_h)
        targets, assign = contextual_groups(metric, k_c)
        merged = merge_groups(feats.float()[rest_idx], targets, assign, opts.merge)
        contextual = float32_projector(ctx.projector)(merged)  # (k_c, d_l)
        tokens = torch.cat([tokens, contextual.to(tokens.dtype)], dim=0)
    return Selection(indices=dominant.long(), scores=scores, tokens=tokens)
