"""PyramidDrop: the rank rule against a naive per-head transcription of Cooperx521/PyramidDrop's
``pdrop_rank_drop`` (layer K's own q/k on the unpruned stage input), multi-stage cached decoding ==
uncached staged recomputation, stage schedule, layer-averaged tokens and FLOPs, option errors."""

from __future__ import annotations

import math

import pytest
import torch

from zooprune.adapters import get_adapter
from zooprune.bench.flops import LMShape, prefill_flops
from zooprune.bench.report import staged_flops
from zooprune.config import PruneConfig
from zooprune.eval.runner import report_prefill_flops
from zooprune.methods import PruneContext, get_method
from zooprune.methods.pyramiddrop import PyramidDropOptions
from zooprune.pipeline import prepare as prepare_pruned
from zooprune.report import PruneReport
from zooprune.vlm import generate_pruned

from .test_in_llm import inputs_for


def clip_like_scores(n: int, seed: int) -> torch.Tensor:
    """Attention-like scores with a few large "sink" tokens (as CLIP-fed LLMs show) over a softmax body."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, generator=g).softmax(0)
    sinks = torch.randperm(n, generator=g)[:3]
    scores[sinks] += 0.5
    return scores / scores.sum()


def naive_top(scores: list[float], k: int) -> list[int]:
    """The k indices of the largest scores, by repeated arg-max (no torch.topk), ascending."""
    left, chosen = list(range(len(scores))), []
    for _ in range(k):
        best = left[0]
        for i in left:
            if scores[i] > scores[best]:
                best = i
        chosen.append(best)
        left.remove(best)
    return sorted(chosen)


@pytest.mark.parametrize("kind", ["random", "clip"])
@pytest.mark.parametrize("k", [1, 7, 40])
def test_pure_rule_is_the_top_k_of_the_next_layer_attention(kind, k):
    n = 64
    for seed in range(3):
        scores = torch.rand(n, generator=torch.Generator().manual_seed(seed)) if kind == "random" else clip_like_scores(n, seed)
        ctx = PruneContext(projected=torch.zeros(n, 4), llm_next_attention=scores)
        sel = get_method("pyramiddrop")(ctx, k)
        assert sel.indices.tolist() == naive_top(scores.tolist(), k)


def test_schedule_and_default_layers():
    opts = PyramidDropOptions()
    assert opts.stage_layers(32) == (8, 16, 24)  # the reference's layer_list on LLaVA-1.5-7B
    assert opts.stage_layers(40) == (10, 20, 30)
    assert opts.stage_layers(3) == (1, 2)
    assert opts.stage_layers(2) == (1,)
    assert [opts.stage_keep(576, 72, s, 3) for s in range(3)] == [288, 144, 72]  # lambda = 0.5
    assert [opts.stage_keep(576, 200, s, 3) for s in range(3)] == [288, 200, 200]
    assert PyramidDropOptions(layers="4, 9").layers == (4, 9)
    assert PyramidDropOptions(layers=[2, 5]).stage_layers(32) == (2, 5)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"ratio": 0.0}, r"ratio must be in \(0, 1\]"),
        ({"ratio": 1.5}, r"ratio must be in \(0, 1\]"),
        ({"layers": "8,4"}, "strictly increasing"),
        ({"layers": "0,4"}, ">= 1"),
        ({"layers": "a,b"}, "integers"),
        ({"ratio": "half"}, "must be float"),
    ],
)
def test_option_errors(options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        PruneConfig(method="pyramiddrop", options=options)


def test_layers_beyond_the_model_are_a_clear_error(tiny_llava, images):
    model, processor = tiny_llava
    inputs = inputs_for(processor, images[:1], ["what ?"])
    prepared = prepare(model, inputs, "pyramiddrop", 4, layers="1,3")
    with pytest.raises(ValueError, match="layer must be in"), torch.no_grad(), prepared.active():
        model(**prepared.model_kwargs(), use_cache=True)


def prepare(model, inputs, method, keep, **options):
    return prepare_pruned(
        get_adapter(model),
        PruneConfig(method, keep=keep, options=options),
        inputs["input_ids"],
        inputs["attention_mask"],
        inputs["pixel_values"],
    )


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of one vector ``(d_h,)`` (Llama's rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[half:], x[:half]])
    return x * cos + rotated * sin


def naive_next_attention(layer, hidden, cos, sin, heads, kv_heads) -> list[float]:
    """Head-averaged softmax attention of the last token to every token, one head and one key at a time,
    with ``layer``'s input norm and q/k projections (``hidden`` ``(L, d)``, ``cos``/``sin`` ``(L, d_h)``)."""
    x = layer.input_layernorm(hidden).float()
    attn = layer.self_attn
    d_h = cos.shape[-1]
    wq, wk = attn.q_proj.weight.float(), attn.k_proj.weight.float()
    length = x.shape[0]
    avg = [0.0] * length
    for h in range(heads):
        g = h // (heads // kv_heads)
        q = rope(wq[h * d_h : (h + 1) * d_h] @ x[-1], cos[-1], sin[-1])
        logits = [float(q @ rope(wk[g * d_h : (g + 1) * d_h] @ x[j], cos[j], sin[j])) / math.sqrt(d_h) for j in range(length)]
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        for j in range(length):
            avg[j] += exps[j] / sum(exps) / heads
    return avg


def test_kept_tokens_match_a_naive_staged_transcription(tiny_llava, images):
    """Layers before K_1 on every token; at each K_s layer K_s's own attention from the last token ranks the
    visual tokens still present (the reference's pdrop_rank_drop); the next stage starts from the kept ones."""
    model, processor = tiny_llava
    inputs = inputs_for(processor, images[:1], ["what is in the image ?"])
    prepared = prepare(model, inputs, "pyramiddrop", 3)
    generate_pruned(model, prepared, max_new_tokens=1)
    (report,) = prepared.reports
    assert [layer for layer, _ in report.stages] == [1, 2]
    assert [n for _, n in report.stages] == [8, 3]  # max(3, int(16 * 0.5)), then k
    lm = model.model.language_model
    cfg = model.config.text_config
    embeds = prepared.spliced.inputs_embeds
    slots = (prepared.spliced.input_ids[0] == model.config.image_token_id).nonzero().flatten().tolist()
    positions = list(range(embeds.shape[1]))
    hidden, done = embeds, 0
    with torch.no_grad():
        for layer_k, count in report.stages:
            pos = torch.tensor([positions])
            cos_sin = lm.rotary_emb(hidden, position_ids=pos)
            for layer in lm.layers[done:layer_k]:
                hidden = layer(hidden, attention_mask=None, position_ids=pos, position_embeddings=cos_sin)
            done = layer_k
            cos, sin = cos_sin[0][0].float(), cos_sin[1][0].float()
            scores = naive_next_attention(lm.layers[layer_k], hidden[0], cos, sin, cfg.num_attention_heads, cfg.num_key_value_heads)
            visual = [i for i, p in enumerate(positions) if p in slots]
            keep_visual = {visual[i] for i in naive_top([scores[i] for i in visual], count)}
            rows = [i for i in range(len(positions)) if i not in visual or i in keep_visual]
            hidden, positions = hidden[:, rows], [positions[i] for i in rows]
    want = [slots.index(p) for p in positions if p in slots]
    assert report.kept_indices.tolist() == want


def staged_logits(model, embeds, stages):
    """Manual reference for one unpadded row: ``stages`` = ``[(K_s, keep mask over all positions, replacements)]``;
    layers in [K_s, K_{s+1}) run on the positions of stage s only (original positions), with
    ``replacements`` ``(index into the kept, (M, d) states)`` written over the hidden states at K_s."""
    lm = model.model.language_model
    positions = torch.arange(embeds.shape[1])[None]
    hidden, current = embeds, torch.ones(embeds.shape[1], dtype=torch.bool)
    bounds = [layer for layer, _, _ in stages] + [len(lm.layers)]
    cos_sin = lm.rotary_emb(hidden, position_ids=positions)
    for layer in lm.layers[: bounds[0]]:
        hidden = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=cos_sin)
    for (layer_k, keep, replace), stop in zip(stages, bounds[1:]):
        rows = keep[current.nonzero().flatten()]  # which of the current positions stay
        hidden, positions, current = hidden[:, rows], positions[:, rows], keep
        if replace is not None:
            hidden = hidden.clone()
            hidden[0, replace[0]] = replace[1].to(hidden.dtype)
        cos_sin = lm.rotary_emb(hidden, position_ids=positions)
        for layer in lm.layers[layer_k:stop]:
            hidden = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=cos_sin)
    return model.lm_head(lm.norm(hidden))


def check_cached_decoding(model, processor, images, method, keep, **options):
    """Greedy decoding with the per-layer KV cache on a left-padded batch of 2 equals re-running the
    staged forward from scratch at every step with every stage's kept set fixed at prefill."""
    inputs = inputs_for(processor, images[:2], ["what is in the image ?", "describe this picture"])
    prepared = prepare(model, inputs, method, keep, **options)
    tokens = generate_pruned(model, prepared, max_new_tokens=4)
    eos = model.generation_config.eos_token_id
    assert len(prepared.plan.stages) >= 2
    for b in range(2):
        valid = prepared.spliced.attention_mask[b].bool()
        pad = int((~valid).sum())
        embeds = prepared.spliced.inputs_embeds[b][valid][None]
        stages = []
        for stage in prepared.plan.stages:
            keep_mask = torch.zeros(embeds.shape[1], dtype=torch.bool)
            kept = stage.keep[b]
            keep_mask[kept[kept >= pad] - pad] = True  # left padding is kept by every stage
            replace = [(where - pad, values) for row, where, values in stage.tokens if row == b]
            stages.append([stage.layer, keep_mask, replace[0] if replace else None])
        want = []
        with torch.no_grad():
            for _ in range(tokens.shape[1]):
                nxt = staged_logits(model, embeds, stages)[0, -1].argmax()
                want.append(int(nxt))
                if int(nxt) == eos:
                    break
                embeds = torch.cat([embeds, model.get_input_embeddings()(nxt)[None, None]], dim=1)
                for stage in stages:
                    stage[1] = torch.cat([stage[1], torch.ones(1, dtype=torch.bool)])
        assert tokens[b, : len(want)].tolist() == want
    return prepared


def test_cached_batched_decoding_matches_uncached_staged_recomputation(tiny_llava, images):
    model, processor = tiny_llava
    prepared = check_cached_decoding(model, processor, images, "pyramiddrop", 3)
    assert [r.stages for r in prepared.reports] == [[(1, 8), (2, 3)]] * 2


def test_layer_averaged_tokens_and_flops_count_every_stage():
    report = PruneReport(method="pyramiddrop", keep=72, tokens_before=576, tokens_after=576, kept_indices=torch.arange(576))
    for layer, n in [(8, 288), (16, 144), (24, 72)]:
        report.record_in_llm(torch.arange(n), None, layer, 32)
    assert report.stages == [(8, 288), (16, 144), (24, 72)]
    assert report.tokens_after == 72 and report.prune_layer == 24
    assert report.equivalent_tokens == (8 * 576 + 8 * 288 + 8 * 144 + 8 * 72) / 32 == 270.0
    report.text_tokens = 50
    shape = LMShape(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000)

    def per_layer(n):  # FastV's formula, by hand
        return 4 * n * 4096**2 + 2 * n**2 * 4096 + 2 * n * 4096 * 11008

    want = 8 * (per_layer(626) + per_layer(338) + per_layer(194) + per_layer(122))
    assert report_prefill_flops(report, shape) == float(want)
    stages = [(8, 338), (16, 194), (24, 122)]
    assert staged_flops(prefill_flops, 626, 122, 24, 32, shape, stages) == float(want)
    single = PruneReport(method="fastv", keep=64, tokens_before=576, tokens_after=576, kept_indices=torch.arange(576))
    single.record_in_llm(torch.arange(64), None, 2, 32)
    single.text_tokens = 50
    assert report_prefill_flops(single, shape) == prefill_flops(626, shape, layers=2) + prefill_flops(114, shape, layers=30)
