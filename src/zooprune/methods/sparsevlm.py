"""``sparsevlm``: text-guided in-LLM sparsification in stages, with recycling of pruned tokens.

SparseVLM (Zhang et al., "SparseVLM: Visual Token Sparsification for Efficient Vision-Language Model
Inference", ICML 2025); semantics follow Gumpest/SparseVLMs (commit 14cb5a9)
``llava/model/language_model/modelling_sparse_llama.py`` ``LlamaDynamicvitModel.forward`` with
``score.py::attn_postprocess_topk`` and ``utils.py::cluster_and_merge``:

1. Raters (once, on the language-model input): ``m = softmax_T(V E_t^T).mean over V`` for the
   image's visual embeddings ``V`` ``(N_0, d)`` and the text after the image ``E_t`` ``(T, d)``;
   the raters are the text tokens with ``m`` above its mean.
2. At each sparse layer (reference ``pruning_loc = [2, 6, 15]``: the attention of decoder layer l
   decides, layers from l + 1 on see the kept tokens: ``K = 3, 7, 16`` here), the attention
   probabilities from the raters to the visual tokens still present, averaged over heads and
   raters, rank them; the top ones are kept.
3. Recycling: of the pruned tokens, the top ``int(0.3 * P) + 1`` by that score are clustered
   (``cluster_and_merge``: DPC-kNN on the layer's output states, distances / sqrt(d), k-nearest =
   number of clusters = ``int(M / 10) + 1``, density ``exp(-mean d_knn^2)`` plus 1e-6 noise,
   centers = top ``distance-to-denser * density``, each token to its nearest center, sums divided by
   ``count + 1e-6``) and the merged tokens go on with the kept ones (they are visual tokens for
   the next stage).

Shapes: ``ctx.llm_text_attention`` ``(T, N)`` (layer ``K_s - 1``), ``ctx.llm_residual`` ``(N, d)``
(layer ``K_s - 1`` output), ``ctx.llm_image_embeds`` ``(N_0, d)`` and ``ctx.instruction`` ``(T, d)``
(language-model input); returns k indices into the N current tokens and, with recycling, ``tokens``
``(k, d)``: the kept tokens' states, the merged ones in their clusters' center slots.

Deliberate deviations:
- Budget: ``keep`` sets the visual tokens after the *last* stage, merged ones included (the
  reference adds the merged tokens on top of hand-set per-stage counts, ``sparse_token_list_64 =
  [66, 30, 17]`` etc.); earlier stages keep ``int(N * (k / N)^((s+1)/S))`` (geometric). Each stage
  keeps ``k_s - c`` tokens by score and ``c`` merged ones, with ``c = int(int(0.3 * (N - k_s)) + 1)
  / 10) + 1`` (the reference's count for the pruned tokens without recycling); recycling is
  skipped where ``k_s - c < 1``. ``equivalent_tokens`` reports the layer-averaged count.
- Placement: each merged token takes the place (and original position id) of its cluster's
  center token; the reference appends the merged tokens after the kept visual tokens and
  renumbers every position 0..L-1 after each stage. ``fidelity="reference"`` therefore raises.
- Default layers: ``K = 3, 7, 16`` of 32 scaled to the model's depth (``(1, 2)`` on 3 layers).
- Raters: if no text token is above the mean (e.g. one text token), every text token after the
  image rates; with none, the last prompt token's attention (``llm_attention``) ranks.
- Attention and clustering in float32; the density noise is drawn from ``ctx.generator``.
- Batches: any size, ragged included (rows keeping different counts at a stage are left-padded with
  slots the attention mask hides, ``adapters/in_llm.py``; batch == one by one; SDPA or eager).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..tensors import sorted_unique
from .base import PruneContext, Selection, register_method
from .options import InLLMStages
from .pyramiddrop import parse_layers, scaled_layers

#: Gumpest/SparseVLMs ``pruning_loc = [2, 6, 15]`` on the 32-layer LLaVA-1.5-7B, as the first layers that
#: see the kept tokens.
REFERENCE_LAYERS = (3, 7, 16)
REFERENCE_DEPTH = 32


@dataclass(frozen=True)
class SparseVLMOptions(InLLMStages):
    """Options of ``sparsevlm``.

    Attributes:
        layers: ``K_1 < ... < K_S`` (a tuple or ``"3,7,16"``); None = ``(3, 7, 16)`` scaled to the depth.
        recycle: merge part of the pruned tokens into recycled tokens (the reference does).
        recycle_ratio: share of the pruned tokens that are recycled (reference 0.3), in (0, 1].
        cluster_ratio: clusters per recycled token (reference 0.1), in (0, 1].
    """

    layers: tuple[int, ...] | None = None
    recycle: bool = True
    recycle_ratio: float = 0.3
    cluster_ratio: float = 0.1

    llm_fields = frozenset({"llm_text_attention", "llm_residual", "llm_image_embeds", "instruction"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", parse_layers(self.layers))
        for name in ("recycle_ratio", "cluster_ratio"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")

    def ignored(self, given: frozenset[str]) -> dict[str, str]:
        if self.recycle:
            return {}
        why = "recycle=False (no pruned token is merged)"
        return {name: why for name in ("recycle_ratio", "cluster_ratio") if name in given}

    def stage_layers(self, num_layers: int) -> tuple[int, ...]:
        return self.layers if self.layers is not None else scaled_layers(REFERENCE_LAYERS, REFERENCE_DEPTH, num_layers)

    def stage_keep(self, n: int, k: int, stage: int, num_stages: int) -> int:
        if stage >= num_stages - 1:
            return k
        return max(k, int(n * (k / n) ** ((stage + 1) / num_stages)))


def raters(image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
    """``(T,)`` bool: the text tokens whose mean (over visual tokens) softmax-over-text relevance is
    above the mean (the reference's ``t_token_idx``). ``image_embeds`` ``(N, d)``, ``text_embeds`` ``(T, d)``."""
    relevance = (image_embeds.float() @ text_embeds.float().T).softmax(dim=1).mean(dim=0)  # (T,)
    return relevance > relevance.mean()


def recycled_clusters(pruned: int, recycle_ratio: float, cluster_ratio: float) -> tuple[int, int]:
    """(recycled tokens, clusters) for ``pruned`` pruned tokens: ``int(r P) + 1`` and ``int(c M) + 1``."""
    recycled = min(pruned, int(pruned * recycle_ratio) + 1)
    return recycled, min(recycled, int(recycled * cluster_ratio) + 1)


def cluster_and_merge(x: Tensor, clusters: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """DPC-kNN clustering of ``x`` ``(M, d)`` into ``clusters`` groups, merged by averaging.

    Returns:
        ``centers`` ``(clusters,)`` indices into x (each cluster's density peak) and ``merged``
        ``(clusters, d)`` float32 (sum of the cluster's tokens / (count + 1e-6)), in center order.
    """
    x = x.float()
    m, d = x.shape
    dist = torch.cdist(x, x) / d**0.5  # (M, M)
    nearest = dist.topk(clusters, dim=-1, largest=False).values  # (M, c), self included
    density = (-(nearest**2).mean(dim=-1)).exp()
    density = density + torch.rand(m, generator=generator) * 1e-6
    denser = density[None, :] > density[:, None]  # [i, j]: j is denser than i
    to_denser = torch.where(denser, dist, dist.max()).min(dim=-1).values  # (M,)
    centers = (to_denser * density).topk(clusters).indices  # (c,)
    assign = dist[centers].argmin(dim=0)  # (M,) nearest center
    assign[centers] = torch.arange(clusters)
    sums = torch.zeros(clusters, d).index_add_(0, assign, x)
    counts = torch.zeros(clusters).index_add_(0, assign, torch.ones(m))
    return centers, sums / (counts[:, None] + 1e-6)


@register_method(
    "sparsevlm",
    needs=("llm_layer",),
    stage="in_llm",
    summary="SparseVLM: text-rater attention prunes visual tokens at LLM layers 3/7/16 of 32, recycling merged ones (in-LLM)",
    options=SparseVLMOptions,
    merges_tokens=True,
    reference_unsupported="the reference (Gumpest/SparseVLMs, LlamaDynamicvitModel.forward) appends the "
    "recycled tokens after the kept ones and renumbers positions; zooprune keeps original positions and puts "
    "each merged token in its cluster center's place",
)
def sparsevlm(ctx: PruneContext, k: int) -> Selection:
    """Keep ``k`` of the N current visual tokens: the top ones by rater attention plus merged recycled ones."""
    ctx.require("llm_attention", method="sparsevlm")
    opts: SparseVLMOptions = ctx.options  # type: ignore[assignment]
    n = ctx.num_tokens
    scores = ctx.llm_attention.float()  # (N,) fallback: the last prompt token
    text = ctx.llm_text_attention
    if text is not None and text.shape[0] > 0:
        rate = torch.ones(text.shape[0], dtype=torch.bool)
        if ctx.llm_image_embeds is not None and ctx.instruction is not None and ctx.instruction.shape[0] == text.shape[0]:
            chosen = raters(ctx.llm_image_embeds, ctx.instruction)
            rate = chosen if bool(chosen.any()) else rate
        scores = text[rate].float().mean(dim=0)  # (N,) heads and raters averaged
    clusters = 0
    if opts.recycle and ctx.llm_residual is not None:
        clusters = recycled_clusters(n - k, opts.recycle_ratio, opts.cluster_ratio)[1]
        if k - clusters < 1:
            clusters = 0
    top = scores.topk(k - clusters).indices
    if clusters == 0:
        return Selection(indices=sorted_unique(top), scores=scores)
    pruned = torch.ones(n, dtype=torch.bool)
    pruned[top] = False
    pruned_idx = pruned.nonzero().flatten()  # ascending, as the reference's torch.where
    recycled = recycled_clusters(pruned_idx.numel(), opts.recycle_ratio, opts.cluster_ratio)[0]
    chosen = pruned_idx[scores[pruned_idx].topk(recycled).indices]  # the best-scored pruned tokens
    centers, merged = cluster_and_merge(ctx.llm_residual[chosen], clusters, ctx.generator)
    slots = chosen[centers]
    indices = torch.cat([top, slots])
    tokens = torch.cat([ctx.llm_residual[top].float(), merged])
    order = indices.argsort()
    return Selection(indices=indices[order], scores=scores, tokens=tokens[order])
