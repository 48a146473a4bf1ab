"""``vscan``: two stages, complementary global + local scans with token merging before the LLM, then
pruning at a middle LLM layer by the last instruction token's attention.

VScan (Zhang et al., "VScan: Rethinking Visual Token Reduction for Efficient Large Vision-Language
Models", arXiv 2505.22654, TMLR 2026); authors' code: Tencent/SelfEvolvingAgent ``VScan/``.
Its README places stage 1 in ``llava/model/llava_arch.py`` (``LlavaMetaForCausalLM.encode_images``)
and stage 2 in ``llava/model/modeling_llama_x.py`` (``LlamaModel.forward_x`` / ``layer_prune``),
adapted from PyramidDrop; its LLaVA-1.5 scripts run ``--visual_token_num 96 --layer_list '[16]'
--image_token_list '[32]'`` (96 tokens leave the encoder, 32 remain from layer 16 of 32: 64 tokens
on average over the layers; 128 / 192 scale the same way: 192 -> 64, 288 -> 96). Those Python
files are not in the reference index this library was written from, so the blocks below follow the
paper's Section 4 and the README; every choice the paper leaves open is listed as a deviation.

Stage 1 (:func:`vscan_encode`, one image ``(N,)`` tokens on a ``rows x cols`` grid, ``k1`` kept):

1. Global scan: the ``n_g = round(global_share * k1)`` patches of highest [CLS] attention
   (``ctx.cls_attention`` ``(N,)``; ties to the lower index).
2. Local scan: the grid is cut into ``w x w`` windows (edge windows smaller); among the patches the
   global scan left, each window ranks its own by [CLS] attention, and the ``n_l = k1 - n_g``
   patches taken are the windows' best ones first (rank 0 of every window before rank 1 of any),
   higher attention first within a rank: local detail spread over the image.
3. Token merging: each of the ``N - k1`` unselected patches joins the selected patch of highest
   cosine similarity of its pre-projector features ``ctx.features`` ``(N, d_v)`` (ties to the lower
   index); a selected patch with members becomes the mean of its own and its members' features,
   through ``ctx.projector`` (float32); one without members stays ``ctx.projected`` as is.

Stage 2 (:func:`vscan_llm`, in-LLM at layer ``K``, default the reference's 16 of 32 scaled to the
model's depth): keep the ``k`` tokens with the largest ``ctx.llm_next_attention`` ``(N,)``, the
last instruction token's head-averaged attention at layer ``K`` (PyramidDrop's ``pdrop_rank_drop``
rank, which the README says the LLM stage is adapted from).

Budget: ``keep`` is what the LLM sees after the last stage (k); stage 1 keeps
``k1 = min(N, round(encode_ratio * k))`` (``encode_ratio=3``: the reference's 96 / 32). The report's
``stages`` hold ``(0, k1)`` and ``(K, k)``, so ``equivalent_tokens`` and the staged FLOPs count both.

Deliberate deviations (also ``docs/fidelity.md``):
- Scan layers: the paper's local scan reads [CLS] attention from shallow encoder layers and the
  global scan from the output layer; the vision towers here expose one layer's [CLS] attention (the
  one the LLM reads, ``hidden_states[-2]`` on LLaVA), so both scans read it. The window structure
  alone makes the local scan complementary.
- Split and window: ``global_share=0.5`` and the window side (``window=None``: the largest ``w``
  with at least ``n_l`` windows) are this library's choices, not read from the reference code.
- Merge metric and rule: cosine of the features the LLM's projector reads, plain mean.
- Positions: kept tokens keep their original position ids in the LLM (``adapters/in_llm.py``);
  the reference (as PyramidDrop) renumbers them; ``fidelity="reference"`` raises.
- Only [CLS] towers: the paper's fallback for towers without [CLS] (mean self-attention) is not
  implemented; families without ``cls_attention`` get the support-matrix error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..tensors import float32_projector, sorted_unique
from .base import PruneContext, Selection, register_method
from .options import InLLMStages
from .pyramiddrop import scaled_layers

#: The reference's ``--layer_list '[16]'`` on the 32-layer LLaVA-1.5-7B.
REFERENCE_LAYER = 16
REFERENCE_DEPTH = 32


@dataclass(frozen=True)
class VScanOptions(InLLMStages):
    """Options of ``vscan`` (see the module docstring).

    Attributes:
        layer: ``K``, the LLM layer from which only the final ``k`` tokens remain; None = 16 of 32
            scaled to the model's depth.
        encode_ratio: stage 1 keeps ``round(encode_ratio * k)`` tokens (at most N), ``>= 1``.
        global_share: the global scan's share of stage 1's tokens, in ``[0, 1]``.
        window: local-scan window side in tokens; None = the largest with at least ``n_l`` windows.
        merge: merge the unselected tokens into the kept ones (False: stage 1 only selects).
    """

    layer: int | None = None
    encode_ratio: float = 3.0
    global_share: float = 0.5
    window: int | None = None
    merge: bool = True

    llm_fields = frozenset({"llm_next_attention"})

    def __post_init__(self) -> None:
        if self.layer is not None and self.layer < 1:
            raise ValueError(f"layer must be >= 1, got {self.layer}")
        if not self.encode_ratio >= 1.0:
            raise ValueError(f"encode_ratio must be >= 1, got {self.encode_ratio}")
        if not 0.0 <= self.global_share <= 1.0:
            raise ValueError(f"global_share must be in [0, 1], got {self.global_share}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")

    def stage_layers(self, num_layers: int) -> tuple[int, ...]:
        if self.layer is not None:
            return (self.layer,)
        return scaled_layers((REFERENCE_LAYER,), REFERENCE_DEPTH, num_layers)

    def encode_keep(self, n: int, k: int) -> int:
        """``k1``: tokens stage 1 keeps of ``n`` when ``k`` remain after stage 2 (half rounds up)."""
        return max(k, min(n, int(math.floor(self.encode_ratio * k + 0.5))))


def window_ids(grid: tuple[int, int], window: int) -> Tensor:
    """``(rows * cols,)`` id of the ``window x window`` cell each token of a row-major grid lies in."""
    rows, cols = grid
    r = torch.arange(rows).repeat_interleave(cols) // window
    c = torch.arange(cols).repeat(rows) // window
    return r * math.ceil(cols / window) + c


def auto_window(grid: tuple[int, int], n_local: int) -> int:
    """The largest window side ``w`` whose ``ceil(rows/w) * ceil(cols/w)`` windows are ``>= n_local``."""
    rows, cols = grid
    best = 1
    for w in range(1, max(rows, cols) + 1):
        if math.ceil(rows / w) * math.ceil(cols / w) >= n_local:
            best = w
    return best


def scan(cls: Tensor, grid: tuple[int, int], k1: int, global_share: float, window: int | None) -> Tensor:
    """Stage 1's selection (global then local scan); ``(k1,)`` sorted indices into the N tokens.

    Args:
        cls: ``(N,)`` [CLS] attention per patch.
        grid: ``(rows, cols)`` with ``rows * cols == N`` (row-major).
    """
    n = cls.shape[0]
    score = cls.float().cpu()
    n_g = min(k1, int(math.floor(global_share * k1 + 0.5)))
    n_l = k1 - n_g
    by_attention = torch.sort(-score, stable=True).indices  # descending, ties to the lower index
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[by_attention[:n_g]] = True
    if n_l:
        w = window if window is not None else auto_window(grid, n_l)
        cell = window_ids(grid, w)
        rest = by_attention[~chosen[by_attention]]  # the rest, attention descending
        rank = torch.zeros(n, dtype=torch.long)
        seen: dict[int, int] = {}
        for i in rest.tolist():  # rank of each token inside its window
            c = int(cell[i])
            rank[i] = seen.get(c, 0)
            seen[c] = int(rank[i]) + 1
        order = rest[torch.sort(rank[rest], stable=True).indices]  # by rank, then attention
        chosen[order[:n_l]] = True
    return chosen.nonzero().flatten().to(cls.device)


def merge_into(features: Tensor, kept: Tensor) -> tuple[Tensor, Tensor]:
    """Each unkept row joins the kept row of highest cosine similarity (ties to the lower index).

    Args:
        features: ``(N, d)``; kept: ``(k1,)`` sorted indices.

    Returns:
        ``(merged, members)``: ``(k1, d)`` float32 means over each kept row and its members, and
        ``(k1,)`` member counts (0 = the row is alone).
    """
    n = features.shape[0]
    x = features.float()
    is_kept = torch.zeros(n, dtype=torch.bool, device=x.device)
    is_kept[kept] = True
    others = (~is_kept).nonzero().flatten()
    z = F.normalize(x, dim=-1)
    target = (z[others] @ z[kept].T).argmax(dim=-1)  # (N - k1,) into kept
    sums = x[kept].clone().index_add_(0, target, x[others])
    counts = torch.zeros(kept.numel(), device=x.device).index_add_(0, target, torch.ones_like(target, dtype=x.dtype))
    return sums / (1 + counts).unsqueeze(-1), counts


@torch.no_grad()
def vscan_encode(ctx: PruneContext, k: int) -> Selection:
    """Stage 1 for one image: global + local scans, unselected tokens merged in (module docstring)."""
    options = ctx.options if isinstance(ctx.options, VScanOptions) else VScanOptions()
    (cls,) = ctx.checked("cls_attention", method="vscan")
    n = ctx.num_tokens
    grid = ctx.grid if ctx.grid is not None and ctx.grid[0] * ctx.grid[1] == n else (1, n)
    k1 = options.encode_keep(n, k)
    scores = cls.float()
    if k1 >= n:
        return Selection(indices=torch.arange(n, device=ctx.projected.device), scores=scores)
    kept = sorted_unique(scan(cls, grid, k1, options.global_share, options.window))
    if not options.merge:
        return Selection(indices=kept, scores=scores)
    (features,) = ctx.checked("features", method="vscan")
    ctx.require("projector", method="vscan")
    merged, counts = merge_into(features, kept)
    tokens = ctx.projected[kept].clone()
    grown = counts > 0
    if bool(grown.any()):
        projector = float32_projector(ctx.projector)
        tokens[grown] = projector(merged[grown]).to(tokens.dtype)
    return Selection(indices=kept, scores=scores, tokens=tokens)


def vscan_llm(ctx: PruneContext, k: int) -> Selection:
    """Stage 2 in the LLM: the ``k`` tokens of largest ``ctx.llm_next_attention`` ``(N,)``."""
    ctx.require("llm_next_attention", method="vscan")
    scores = ctx.llm_next_attention.float()
    return Selection(indices=sorted_unique(torch.sort(-scores, stable=True).indices[:k]), scores=scores)


@register_method(
    "vscan",
    needs=("features", "projector", "grid", "cls_attention", "llm_layer"),
    stage="pre_and_in_llm",
    summary="VScan: global + local [CLS] scans with merging before the LLM, then last-token attention at LLM layer 16/32",
    options=VScanOptions,
    merges_tokens=True,
    reference_unsupported="the reference (Tencent/SelfEvolvingAgent VScan, llava_arch.py / modeling_llama_x.py) reads "
    "shallow-layer [CLS] attention the towers here do not expose and renumbers positions after the LLM-stage drop",
)
def vscan(ctx: PruneContext, k: int) -> Selection:
    """Stage 1 before the LLM (``ctx.llm_stage is None``: ``k`` is the final budget, ``k1`` are kept),
    stage 2 inside it (``ctx.llm_stage`` set: ``k`` are kept)."""
    return vscan_encode(ctx, k) if ctx.llm_stage is None else vscan_llm(ctx, k)
