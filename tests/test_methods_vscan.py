"""VScan: stage 1 (global + local [CLS] scans, merging) against a naive loop transcription of the paper's
rule on random and CLIP-like inputs, stage 2 (last-token attention at layer K), the two stages through the
pipeline (the slot holds the merged tokens, the in-LLM stage picks among them), cached decoding == uncached
two-stage recomputation, keep-all == stock, layer-averaged tokens and FLOPs over both stages, options."""

from __future__ import annotations

import math

import pytest
import torch

from zooprune.adapters import get_adapter
from zooprune.bench.flops import LMShape, prefill_flops
from zooprune.config import PruneConfig
from zooprune.eval.runner import report_prefill_flops
from zooprune.methods import PruneContext, get_method
from zooprune.methods.vscan import VScanOptions
from zooprune.pipeline import prepare as prepare_pruned
from zooprune.vlm import generate_pruned

from .test_in_llm import inputs_for
from .test_methods_pyramiddrop import naive_next_attention, naive_top, staged_logits


# ---- an independent transcription of stage 1 (paper Sec. 4: global scan, local scan, merge) -------------
def naive_argmax_order(values: list[float], among: list[int]) -> list[int]:
    """``among`` by decreasing value, ties to the lower index, by repeated arg-max."""
    left, out = sorted(among), []
    while left:
        best = left[0]
        for i in left:
            if values[i] > values[best]:
                best = i
        out.append(best)
        left.remove(best)
    return out


def naive_stage1(cls: list[float], rows: int, cols: int, k1: int, share: float, window: int | None) -> list[int]:
    """Global: the round(share * k1) of highest [CLS] attention; local: per w x w window, the window's best
    remaining token first (windows ordered by that token's attention), then every window's second, ..."""
    n = rows * cols
    n_g = int(math.floor(share * k1 + 0.5))
    n_l = k1 - n_g
    chosen = naive_argmax_order(cls, list(range(n)))[:n_g]
    if n_l:
        w = window
        if w is None:  # the largest side with at least n_l windows
            w = max(s for s in range(1, max(rows, cols) + 1) if math.ceil(rows / s) * math.ceil(cols / s) >= n_l)
        windows: dict[tuple[int, int], list[int]] = {}
        for i in range(n):
            if i not in chosen:
                windows.setdefault((i // cols // w, i % cols // w), []).append(i)
        queues = [naive_argmax_order(cls, members) for members in windows.values()]
        taken: list[int] = []
        depth = 0
        while len(taken) < n_l:
            round_ = [q[depth] for q in queues if len(q) > depth]
            taken += naive_argmax_order(cls, round_)[: n_l - len(taken)]
            depth += 1
        chosen += taken
    return sorted(chosen)


def naive_merge(features: torch.Tensor, kept: list[int]) -> list[torch.Tensor]:
    """Each unkept token joins the kept token of highest cosine similarity (first on ties); each kept token
    becomes the mean of itself and its members."""
    x = features.detach().double()
    groups = {j: [j] for j in kept}
    for i in range(x.shape[0]):
        if i in groups:
            continue
        sims = [float(x[i] @ x[j]) / (float(x[i].norm()) * float(x[j].norm())) for j in kept]
        best = 0
        for t in range(len(kept)):
            if sims[t] > sims[best]:
                best = t
        groups[kept[best]].append(i)
    return [sum(x[m] for m in groups[j]) / len(groups[j]) for j in kept], [len(groups[j]) - 1 for j in kept]


def clip_like(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP-like inputs: features with a few huge outlier channels, [CLS] attention with sink tokens."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, d, generator=g)
    features[:, :2] += 30.0 * torch.rand(n, 1, generator=g)  # outlier channels shared by every token
    cls = torch.randn(n, generator=g).softmax(0)
    cls[torch.randperm(n, generator=g)[:3]] += 0.4  # attention sinks
    return features, cls / cls.sum()


def inputs(kind: str, n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if kind == "clip":
        return clip_like(n, d, seed)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.rand(n, generator=g)


@pytest.mark.parametrize("kind", ["random", "clip"])
@pytest.mark.parametrize(
    ("grid", "k", "options"),
    [((6, 6), 4, {}), ((6, 6), 7, {"global_share": 0.25}), ((5, 7), 3, {"window": 2}), ((6, 6), 9, {"global_share": 1.0}),
     ((4, 6), 2, {"global_share": 0.0, "encode_ratio": 4.0})],
)
def test_stage1_matches_a_naive_transcription(kind, grid, k, options):
    rows, cols = grid
    n, d = rows * cols, 8
    g = torch.Generator().manual_seed(11)
    projector = torch.nn.Sequential(torch.nn.Linear(d, 16), torch.nn.GELU(), torch.nn.Linear(16, 5))
    for seed in range(3):
        features, cls = inputs(kind, n, d, seed)
        with torch.no_grad():
            projected = projector(features) + 0.01 * torch.randn(n, 5, generator=g)  # unmerged rows stay these
        ctx = PruneContext(projected=projected, features=features, projector=projector, grid=grid, cls_attention=cls, options=options)
        sel = get_method("vscan")(ctx, k)
        opts = VScanOptions(**options)
        k1 = opts.encode_keep(n, k)
        want = naive_stage1(cls.tolist(), rows, cols, k1, opts.global_share, opts.window)
        assert sel.indices.tolist() == want
        merged, members = naive_merge(features, want)
        with torch.no_grad():
            for row, (mean, count, j) in enumerate(zip(merged, members, want)):
                expect = projector(mean.float()) if count else projected[j]
                torch.testing.assert_close(sel.tokens[row], expect, rtol=1e-5, atol=1e-5)
        assert sum(members) == n - k1


def test_stage1_without_merging_only_selects_and_keeps_all_when_k1_covers_n():
    features, cls = clip_like(36, 8, 0)
    ctx = PruneContext(projected=features, features=features, grid=(6, 6), cls_attention=cls, options={"merge": False})
    sel = get_method("vscan")(ctx, 4)
    assert sel.tokens is None and sel.indices.tolist() == naive_stage1(cls.tolist(), 6, 6, 12, 0.5, None)
    everything = get_method("vscan")(PruneContext(projected=features, grid=(6, 6), cls_attention=cls), 12)
    assert everything.indices.tolist() == list(range(36)) and everything.tokens is None


@pytest.mark.parametrize("kind", ["random", "clip"])
def test_stage2_is_the_top_k_of_the_next_layer_attention(kind):
    for seed in range(3):
        _, scores = inputs(kind, 40, 4, seed)
        ctx = PruneContext(projected=torch.zeros(40, 4), llm_next_attention=scores, llm_stage=0)
        assert get_method("vscan")(ctx, 6).indices.tolist() == naive_top(scores.tolist(), 6)


def test_budget_split_and_default_layer():
    opts = VScanOptions()
    assert [opts.encode_keep(576, k) for k in (32, 64, 96)] == [96, 192, 288]  # the reference's LLaVA-1.5 runs
    assert opts.encode_keep(20, 10) == 20 and opts.encode_keep(576, 576) == 576
    assert opts.stage_layers(32) == (16,) and opts.stage_layers(28) == (14,) and opts.stage_layers(3) == (2,)
    assert VScanOptions(layer=5).stage_layers(32) == (5,)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"encode_ratio": 0.5}, "encode_ratio must be >= 1"),
        ({"global_share": 1.5}, r"global_share must be in \[0, 1\]"),
        ({"window": 0}, "window must be >= 1"),
        ({"layer": 0}, "layer must be >= 1"),
        ({"windows": 2}, "Did you mean 'window'"),
    ],
)
def test_option_errors(options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        PruneConfig(method="vscan", options=options)


def prepare(model, inputs, keep, **options):
    return prepare_pruned(
        get_adapter(model),
        PruneConfig("vscan", keep=keep, options=options),
        inputs["input_ids"],
        inputs["attention_mask"],
        inputs["pixel_values"],
    )


def test_metadata():
    method = get_method("vscan")
    assert method.pre_llm and method.in_llm and method.merges_tokens and not method.supports_reference
    assert {"cls_attention", "grid", "features", "projector", "llm_layer"} <= method.needs


def test_both_stages_through_the_pipeline(tiny_llava, images):
    """The slot holds stage 1's merged tokens (recomputed here from the adapter's encoding with the naive
    rule); the LLM stage at K ranks them by layer K's own last-token attention; the report maps back to N."""
    model, processor = tiny_llava
    inputs = inputs_for(processor, images[:1], ["what is in the image ?"])
    prepared = prepare(model, inputs, 2)
    generate_pruned(model, prepared, max_new_tokens=1)
    (report,) = prepared.reports
    adapter = get_adapter(model)
    (image,) = adapter.encode(inputs["pixel_values"], get_method("vscan").needs)
    n = image.projected.shape[0]
    rows, cols = image.grid
    first = naive_stage1(image.cls_attention.tolist(), rows, cols, 6, 0.5, None)
    merged, members = naive_merge(image.features, first)
    proj = adapter.float32_projector()
    slot = (prepared.spliced.input_ids[0] == model.config.image_token_id).nonzero().flatten()
    assert slot.numel() == 6
    with torch.no_grad():
        for row, (mean, count, j) in enumerate(zip(merged, members, first)):
            expect = proj(mean.float()).to(image.projected.dtype) if count else image.projected[j]
            torch.testing.assert_close(prepared.spliced.inputs_embeds[0, slot[row]], expect, rtol=1e-5, atol=1e-5)
    # stage 2 by hand: layers [0, K) on the spliced sequence, K's own attention from the last token
    lm, cfg = model.model.language_model, model.config.text_config
    (layer_k,) = [layer for layer, _ in report.stages if layer > 0]
    embeds = prepared.spliced.inputs_embeds
    pos = torch.arange(embeds.shape[1])[None]
    with torch.no_grad():
        cos_sin = lm.rotary_emb(embeds, position_ids=pos)
        hidden = embeds
        for layer in lm.layers[:layer_k]:
            hidden = layer(hidden, attention_mask=None, position_ids=pos, position_embeddings=cos_sin)
        scores = naive_next_attention(
            lm.layers[layer_k], hidden[0], cos_sin[0][0].float(), cos_sin[1][0].float(), cfg.num_attention_heads, cfg.num_key_value_heads
        )
    chosen = naive_top([scores[int(p)] for p in slot], 2)
    assert report.kept_indices.tolist() == [first[i] for i in chosen]
    assert report.stages == [(0, 6), (layer_k, 2)] and report.tokens_before == n and report.tokens_after == 2
    assert report.scores is not None and report.scores.shape == (n,)  # the pre-LLM [CLS] scores


def test_ratio_budget_is_of_the_images_tokens(tiny_llava, images):
    model, processor = tiny_llava
    inputs = inputs_for(processor, images[:1], ["what ?"])
    prepared = prepare(model, inputs, 0.25)
    generate_pruned(model, prepared, max_new_tokens=1)
    (report,) = prepared.reports
    n = report.tokens_before
    assert report.stages[0] == (0, min(n, 3 * int(0.25 * n))) and report.tokens_after == int(0.25 * n)


def test_cached_batched_decoding_matches_uncached_two_stage_recomputation(tiny_llava, images):
    """Greedy decoding with the KV cache on a left-padded batch of 2 equals re-running, at every step, stage 1's
    spliced sequence through layers [0, K) on every token and [K, L) on the kept ones only."""
    model, processor = tiny_llava
    inputs = inputs_for(processor, images[:2], ["what is in the image ?", "describe this picture"])
    prepared = prepare(model, inputs, 2)
    tokens = generate_pruned(model, prepared, max_new_tokens=4)
    eos = model.generation_config.eos_token_id
    (stage,) = prepared.plan.stages
    for b in range(2):
        valid = prepared.spliced.attention_mask[b].bool()
        pad = int((~valid).sum())
        embeds = prepared.spliced.inputs_embeds[b][valid][None]
        keep_mask = torch.zeros(embeds.shape[1], dtype=torch.bool)
        kept = stage.keep[b]
        keep_mask[kept[kept >= pad] - pad] = True
        assert int(keep_mask.sum()) == embeds.shape[1] - 6 + 2  # text + the 2 visual tokens of stage 2
        stages = [[stage.layer, keep_mask, None]]
        want = []
        with torch.no_grad():
            for _ in range(tokens.shape[1]):
                nxt = staged_logits(model, embeds, stages)[0, -1].argmax()
                want.append(int(nxt))
                if int(nxt) == eos:
                    break
                embeds = torch.cat([embeds, model.get_input_embeddings()(nxt)[None, None]], dim=1)
                stages[0][1] = torch.cat([stages[0][1], torch.ones(1, dtype=torch.bool)])
        assert tokens[b, : len(want)].tolist() == want


def test_keep_all_is_the_stock_model(tiny_llava, images):
    model, processor = tiny_llava
    inputs = inputs_for(processor, images[:1], ["what is in the image ?"])
    with torch.no_grad():
        stock = model(**inputs).logits
        prepared = prepare(model, inputs, 1.0)
        with prepared.active():
            assert torch.equal(model(**prepared.model_kwargs(), use_cache=True).logits, stock)


def test_layer_averaged_tokens_and_flops_count_both_stages(tiny_llava, images):
    model, processor = tiny_llava
    prepared = prepare(model, inputs_for(processor, images[:1], ["what ?"]), 2)
    generate_pruned(model, prepared, max_new_tokens=1)
    (report,) = prepared.reports
    n, layers = report.tokens_before, len(model.model.language_model.layers)
    (k_layer, _), = [st for st in report.stages if st[0] > 0]
    assert report.equivalent_tokens == (k_layer * 6 + (layers - k_layer) * 2) / layers
    report.text_tokens = 10
    shape = LMShape(hidden=64, intermediate=128, layers=layers, heads=4, kv_heads=4, vocab=100)
    want = prefill_flops(10 + 6, shape, layers=k_layer) + prefill_flops(10 + 2, shape, layers=layers - k_layer)
    assert report_prefill_flops(report, shape) == want
    assert report_prefill_flops(report, shape) < prefill_flops(10 + n, shape)


def test_reference_fidelity_raises():
    with pytest.raises(ValueError, match="method 'vscan' has no fidelity='reference': .*shallow-layer"):
        PruneConfig(method="vscan", fidelity="reference")


def test_families_without_cls_attention_get_a_clear_error():
    from zooprune.adapters import ADAPTERS

    without = [t for t, a in ADAPTERS.items() if "cls_attention" not in a.provides]
    assert without  # e.g. qwen2-vl, gemma3: no [CLS] token
    assert all(not get_method("vscan").needs <= ADAPTERS.get(t).provides for t in without)
