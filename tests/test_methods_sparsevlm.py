"""SparseVLM: raters, DPC-kNN recycling and the whole selection rule against naive transcriptions written
from Gumpest/SparseVLMs (``LlamaDynamicvitModel.forward``, ``attn_postprocess_topk``, ``cluster_and_merge``);
the plan's text-token attention against the eager model's; multi-stage cached decoding (with merged
tokens) == uncached staged recomputation; option errors."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch

from zooprune.config import PruneConfig
from zooprune.methods import PruneContext, get_method
from zooprune.methods.sparsevlm import SparseVLMOptions, cluster_and_merge, raters, recycled_clusters
from zooprune.vlm import generate_pruned

from .test_in_llm import inputs_for
from .test_methods_pyramiddrop import check_cached_decoding, naive_top, prepare


def clip_like(n: int, d: int, seed: int) -> torch.Tensor:
    """CLIP-like states: a shared mean direction, a few high-norm outlier tokens, small noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, d, generator=g) * 2 + torch.randn(n, d, generator=g) * 0.3
    x[torch.randperm(n, generator=g)[:2]] *= 8
    return x


def inputs(kind: str, n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) if kind == "random" else clip_like(n, d, seed)


def naive_raters(v: torch.Tensor, t: torch.Tensor) -> list[bool]:
    """m_j = mean_i softmax_j(<v_i, t_j>), raters = m_j > mean(m): loops over tokens."""
    n, m = v.shape[0], t.shape[0]
    rel = [0.0] * m
    for i in range(n):
        logits = [float(v[i] @ t[j]) for j in range(m)]
        top = max(logits)
        exps = [math.exp(x - top) for x in logits]
        for j in range(m):
            rel[j] += exps[j] / sum(exps) / n
    mean = sum(rel) / m
    return [r > mean for r in rel]


@pytest.mark.parametrize("kind", ["random", "clip"])
def test_raters_match_a_naive_transcription(kind):
    for seed in range(3):
        v, t = inputs(kind, 20, 8, seed) * 0.3, inputs(kind, 9, 8, seed + 10) * 0.3
        assert raters(v, t).tolist() == naive_raters(v, t)


def naive_cluster_and_merge(x: torch.Tensor, c: int, noise: torch.Tensor) -> tuple[list[int], list[torch.Tensor]]:
    """DPC-kNN as the reference's cluster_and_merge, by loops (noise given: the draw is the caller's)."""
    m, d = x.shape
    dist = [[float((x[i] - x[j]).norm()) / math.sqrt(d) for j in range(m)] for i in range(m)]
    density = []
    for i in range(m):
        near = sorted(dist[i])[:c]
        density.append(math.exp(-sum(v * v for v in near) / c) + float(noise[i]))
    dmax = max(max(row) for row in dist)
    parent = [min([dist[i][j] for j in range(m) if density[j] > density[i]] or [dmax]) for i in range(m)]
    score = [parent[i] * density[i] for i in range(m)]
    centers = sorted(range(m), key=lambda i: -score[i])[:c]
    members = {j: [] for j in range(c)}
    for i in range(m):
        if i in centers:
            members[centers.index(i)].append(i)
        else:
            members[min(range(c), key=lambda j: dist[centers[j]][i])].append(i)
    merged = [sum(x[i] for i in members[j]) / (len(members[j]) + 1e-6) for j in range(c)]
    return centers, merged


@pytest.mark.parametrize("kind", ["random", "clip"])
@pytest.mark.parametrize(("m", "c"), [(12, 2), (30, 4), (5, 1)])
def test_cluster_and_merge_matches_a_naive_transcription(kind, m, c):
    for seed in range(3):
        x = inputs(kind, m, 16, seed)
        centers, merged = cluster_and_merge(x, c, torch.Generator().manual_seed(seed))
        noise = torch.rand(m, generator=torch.Generator().manual_seed(seed)) * 1e-6
        want_centers, want_merged = naive_cluster_and_merge(x, c, noise)
        assert centers.tolist() == want_centers
        torch.testing.assert_close(merged, torch.stack(want_merged), rtol=1e-5, atol=1e-5)


def naive_sparsevlm(ctx: PruneContext, k: int, opts: SparseVLMOptions):
    """The whole stage rule by hand: rater-averaged attention ranks; c clusters from the pruned count;
    top k - c kept; the best int(0.3 P) + 1 pruned ones clustered; merged tokens in their centers' places."""
    n = ctx.num_tokens
    rate = naive_raters(ctx.llm_image_embeds, ctx.instruction)
    rows = [i for i, r in enumerate(rate) if r] or list(range(len(rate)))
    score = [sum(float(ctx.llm_text_attention[r, j]) for r in rows) / len(rows) for j in range(n)]
    c = int((int((n - k) * opts.recycle_ratio) + 1) * opts.cluster_ratio) + 1
    top = naive_top(score, k - c)
    pruned = [i for i in range(n) if i not in top]
    recycled = [pruned[i] for i in naive_top([score[p] for p in pruned], int(len(pruned) * opts.recycle_ratio) + 1)]
    recycled.sort(key=lambda p: -score[p])  # the reference clusters them in score order
    noise = torch.rand(len(recycled), generator=torch.Generator().manual_seed(0)) * 1e-6
    centers, merged = naive_cluster_and_merge(ctx.llm_residual[recycled].float(), c, noise)
    states = {i: ctx.llm_residual[i].float() for i in top}
    states.update({recycled[ci]: merged[j] for j, ci in enumerate(centers)})
    order = sorted(states)
    return order, torch.stack([states[i] for i in order])


@pytest.mark.parametrize("kind", ["random", "clip"])
@pytest.mark.parametrize("k", [6, 20])
def test_selection_rule_matches_a_naive_transcription(kind, k):
    n, t, d = 48, 7, 16
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        text_attention = torch.rand(t, n, generator=g) if kind == "random" else clip_like(t, n, seed).abs()
        ctx = PruneContext(
            projected=torch.zeros(n, d),
            llm_attention=torch.rand(n, generator=g),
            llm_text_attention=text_attention,
            llm_residual=inputs(kind, n, d, seed + 1),
            llm_image_embeds=inputs(kind, n, d, seed + 2) * 0.2,
            instruction=inputs(kind, t, d, seed + 3) * 0.2,
            generator=torch.Generator().manual_seed(0),
        )
        sel = get_method("sparsevlm")(ctx, k)
        want_idx, want_tokens = naive_sparsevlm(ctx, k, SparseVLMOptions())
        assert sel.indices.tolist() == want_idx
        torch.testing.assert_close(sel.tokens, want_tokens, rtol=1e-5, atol=1e-5)
        plain = get_method("sparsevlm")(replace(ctx, options={"recycle": False}), k)
        assert sel.tokens.shape == (k, d) and plain.tokens is None and plain.indices.numel() == k


def test_recycling_counts():
    assert recycled_clusters(510, 0.3, 0.1) == (154, 16)  # the reference's 576 -> 66 stage
    assert recycled_clusters(1, 0.3, 0.1) == (1, 1)
    assert SparseVLMOptions().stage_layers(32) == (3, 7, 16)  # pruning_loc [2, 6, 15] + 1
    assert SparseVLMOptions().stage_layers(3) == (1, 2)
    assert [SparseVLMOptions().stage_keep(576, 64, s, 3) for s in range(3)] == [276, 133, 64]  # int(576 (64/576)^(s/3))


def test_text_attention_is_the_eager_models_at_layer_k_minus_1(tiny_llava, images):
    """The plan's ``llm_text_attention`` at stage 0 equals the eager model's head-averaged attention rows of
    the text after the image, at layer K_1 - 1, restricted to the visual columns."""
    model, processor = tiny_llava
    inputs = inputs_for(processor, images[:2], ["what is in the image ?", "describe this picture"])
    prepared = prepare(model, inputs, "sparsevlm", 4)
    seen = []
    method = prepared.plan.method
    prepared.plan.method = replace(method, fn=lambda ctx, k: seen.append(ctx) or method.fn(ctx, k))
    generate_pruned(model, prepared, max_new_tokens=1)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        attn = eager(**inputs, output_attentions=True).attentions[0].mean(dim=1)  # layer K_1 - 1 = 0
    for b in range(2):
        slots = (inputs["input_ids"][b] == model.config.image_token_id).nonzero().flatten()
        text = torch.arange(int(slots[-1]) + 1, inputs["input_ids"].shape[1])
        want = attn[b][text][:, slots]
        torch.testing.assert_close(seen[b].llm_text_attention, want, rtol=1e-5, atol=1e-6)
        assert seen[b].llm_stage == 0 and seen[b].llm_prune_layer == 1
        assert seen[b].instruction.shape[0] == text.numel() and seen[b].llm_image_embeds.shape[0] == 16


def test_cached_batched_decoding_with_recycled_tokens_matches_uncached_recomputation(tiny_llava, images):
    model, processor = tiny_llava
    prepared = check_cached_decoding(model, processor, images, "sparsevlm", 5)
    assert any(stage.tokens for stage in prepared.plan.stages)  # merged tokens were written
    assert all(r.tokens_after == 5 for r in prepared.reports)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"recycle_ratio": 0.0}, r"recycle_ratio must be in \(0, 1\]"),
        ({"cluster_ratio": 2.0}, r"cluster_ratio must be in \(0, 1\]"),
        ({"layers": "7,3"}, "strictly increasing"),
        ({"recycle": False, "cluster_ratio": 0.2}, "ignored: recycle=False"),
    ],
)
def test_option_errors(options, match):
    with pytest.raises(ValueError, match=match):
        PruneConfig(method="sparsevlm", options=options)
