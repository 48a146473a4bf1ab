"""In-LLM pruning (FastV, DART): kept sets against independent computations, cache consistency."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from zooprune.adapters import get_adapter
from zooprune.config import PruneConfig
from zooprune.methods import METHODS
from zooprune.pipeline import prepare as prepare_pruned
from zooprune.vlm import generate_pruned


def inputs_for(processor, images, prompts):
    processor.tokenizer.padding_side = "left"
    return processor(
        images=images,
        text=[f"USER: <image>\n{p} ASSISTANT:" for p in prompts],
        padding=True,
        return_tensors="pt",
    )


def prepared_forward(model, inputs, method, keep, **options):
    prepared = prepare_pruned(
        get_adapter(model),
        PruneConfig(method, keep=keep, options=options),
        inputs["input_ids"],
        inputs["attention_mask"],
        inputs["pixel_values"],
    )
    with torch.no_grad(), prepared.active():
        logits = model(**prepared.model_kwargs(), use_cache=True).logits
    return prepared, logits


@pytest.mark.parametrize("layer", [1, 2])
def test_fastv_keeps_the_top_attention_tokens_of_layer_k(tiny_llava, images, layer):
    model, processor = tiny_llava
    inputs = inputs_for(processor, images[:2], ["what is in the image ?", "describe this picture"])
    prepared, _ = prepared_forward(model, inputs, "fastv", 5, layer=layer)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        out = eager(**inputs, output_attentions=True)
    attn = out.attentions[layer - 1].mean(dim=1)[:, -1]  # (B, L): heads averaged, from the last token
    for b, report in enumerate(prepared.reports):
        slots = (inputs["input_ids"][b] == model.config.image_token_id).nonzero().flatten()
        want = attn[b, slots].topk(5).indices.sort().values
        assert torch.equal(report.kept_indices, want)
        assert report.tokens_after == 5
        layers = model.config.text_config.num_hidden_layers
        assert report.equivalent_tokens == pytest.approx((layer * 16 + (layers - layer) * 5) / layers)


def test_in_llm_prefill_equals_a_manual_two_stage_forward(tiny_llava, images):
    """Layers < K on all tokens, layers >= K on the kept ones, original positions: recomputed by hand."""
    model, processor = tiny_llava
    inputs = inputs_for(processor, images[:1], ["what is in the image ?"])
    prepared, logits = prepared_forward(model, inputs, "fastv", 4, layer=2)
    lm = model.model.language_model
    embeds = prepared.spliced.inputs_embeds
    n_text = embeds.shape[1]
    positions = torch.arange(n_text)[None]
    with torch.no_grad():
        hidden = embeds
        cos_sin = lm.rotary_emb(hidden, position_ids=positions)
        for layer in lm.layers[:2]:
            hidden = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=cos_sin)
        slots = (prepared.spliced.input_ids[0] == model.config.image_token_id).nonzero().flatten()
        keep = torch.ones(n_text, dtype=torch.bool)
        keep[slots] = False
        keep[slots[prepared.reports[0].kept_indices]] = True
        hidden, kept_pos = hidden[:, keep], positions[:, keep]
        cos_sin = lm.rotary_emb(hidden, position_ids=kept_pos)
        for layer in lm.layers[2:]:
            hidden = layer(hidden, attention_mask=None, position_ids=kept_pos, position_embeddings=cos_sin)
        want = model.lm_head(lm.norm(hidden))
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)


def two_stage_logits(model, embeds, keep, k_layer):
    """Manual reference (one unpadded row): layers < K on every position, layers >= K on ``keep``."""
    lm = model.model.language_model
    positions = torch.arange(embeds.shape[1])[None]
    hidden = embeds
    cos_sin = lm.rotary_emb(hidden, position_ids=positions)
    for layer in lm.layers[:k_layer]:
        hidden = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=cos_sin)
    hidden, positions = hidden[:, keep], positions[:, keep]
    cos_sin = lm.rotary_emb(hidden, position_ids=positions)
    for layer in lm.layers[k_layer:]:
        hidden = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=cos_sin)
    return model.lm_head(lm.norm(hidden))


@pytest.mark.parametrize("method", ["fastv", "dart"])
def test_cached_batched_decoding_matches_uncached_recomputation(tiny_llava, images, method):
    """Greedy decoding with the per-layer KV cache, left-padded batch of 2, equals re-running the
    two-stage forward from scratch at every step with the kept set fixed at prefill."""
    model, processor = tiny_llava
    inputs = inputs_for(processor, images[:2], ["what is in the image ?", "describe this picture"])
    prepared = prepare_pruned(
        get_adapter(model),
        PruneConfig(method, keep=4), inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"]
    )
    tokens = generate_pruned(model, prepared, max_new_tokens=4)
    eos = model.generation_config.eos_token_id
    for b, report in enumerate(prepared.reports):
        valid = prepared.spliced.attention_mask[b].bool()
        embeds = prepared.spliced.inputs_embeds[b][valid][None]
        slots = (prepared.spliced.input_ids[b][valid] == model.config.image_token_id).nonzero().flatten()
        keep = torch.ones(embeds.shape[1], dtype=torch.bool)
        keep[slots] = False
        keep[slots[report.kept_indices]] = True
        want = []
        with torch.no_grad():
            for _ in range(tokens.shape[1]):
                nxt = two_stage_logits(model, embeds, keep, 2)[0, -1].argmax()
                want.append(int(nxt))
                if int(nxt) == eos:
                    break
                embeds = torch.cat([embeds, model.get_input_embeddings()(nxt)[None, None]], dim=1)
                keep = torch.cat([keep, torch.ones(1, dtype=torch.bool)])
        assert tokens[b, : len(want)].tolist() == want


def test_in_llm_layer_out_of_range_is_a_clear_error(tiny_llava, images):
    model, processor = tiny_llava
    inputs = inputs_for(processor, images[:1], ["what ?"])
    with pytest.raises(ValueError, match="layer must be in"):
        prepared_forward(model, inputs, "fastv", 4, layer=3)


def reference_fastv_generation(model, embeds, slots, k, k_layer, steps):
    """FastV's reference generation, recomputed independently (one unpadded row): at every step the
    whole sequence runs again; the eager model's layer K-1 attention (heads averaged, last token's
    row) ranks the image tokens; layers >= K run on the top k. Returns the tokens and each step's kept."""
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    lm = eager.model.language_model
    eos = model.generation_config.eos_token_id
    tokens, kept = [], []
    with torch.no_grad():
        for _ in range(steps):
            out = lm(inputs_embeds=embeds, output_attentions=True, use_cache=False)
            attn = out.attentions[k_layer - 1].mean(dim=1)[0, -1]  # (L,)
            top = attn[slots].topk(k).indices.sort().values
            keep = torch.ones(embeds.shape[1], dtype=torch.bool)
            keep[slots] = False
            keep[slots[top]] = True
            nxt = int(two_stage_logits(model, embeds, keep, k_layer)[0, -1].argmax())
            tokens.append(nxt)
            kept.append(top.tolist())
            if nxt == eos:
                break
            embeds = torch.cat([embeds, model.get_input_embeddings()(torch.tensor(nxt))[None, None]], dim=1)
    return tokens, kept


@pytest.mark.parametrize("rows", [1, 2])
def test_fastv_reference_reselects_at_every_step(tiny_llava, images, rows):
    """``fidelity="reference"``: each step re-selects from that step's last token (the kept set changes
    between steps) and equals an uncached recomputation; a left-padded batch equals each row alone."""
    model, processor = tiny_llava
    prompts = ["what is in the image ?", "describe this picture"][:rows]
    inputs = inputs_for(processor, images[:rows], prompts)
    prepared = prepare_pruned(
        get_adapter(model),
        PruneConfig("fastv", keep=4, fidelity="reference"),
        inputs["input_ids"],
        inputs["attention_mask"],
        inputs["pixel_values"],
    )
    tokens = generate_pruned(model, prepared, max_new_tokens=6)
    changed = False
    for b, report in enumerate(prepared.reports):
        valid = prepared.spliced.attention_mask[b].bool()
        embeds = prepared.spliced.inputs_embeds[b][valid][None]
        slots = (prepared.spliced.input_ids[b][valid] == model.config.image_token_id).nonzero().flatten()
        want, want_kept = reference_fastv_generation(model, embeds, slots, 4, 2, tokens.shape[1])
        assert tokens[b, : len(want)].tolist() == want
        got_kept = [step[b].tolist() for step in prepared.plan.steps[: len(want)]]
        assert got_kept == want_kept
        assert report.kept_indices.tolist() == want_kept[0]  # the report: the prompt's selection
        changed |= any(s != want_kept[0] for s in want_kept)
    assert changed  # re-selected, not fixed at prefill


def test_fastv_reference_keep_all_equals_stock_generate(tiny_llava, images):
    model, processor = tiny_llava
    inputs = inputs_for(processor, images[:2], ["what is in the image ?", "describe this picture"])
    n = int((inputs["input_ids"][0] == model.config.image_token_id).sum())
    prepared = prepare_pruned(
        get_adapter(model),
        PruneConfig("fastv", keep=n, fidelity="reference"),
        inputs["input_ids"],
        inputs["attention_mask"],
        inputs["pixel_values"],
    )
    tokens = generate_pruned(model, prepared, max_new_tokens=6)
    with torch.no_grad():
        stock = model.generate(**inputs, max_new_tokens=6, do_sample=False)[:, inputs["input_ids"].shape[1] :]
    assert torch.equal(tokens, stock)
    assert len(prepared.plan.steps) == tokens.shape[1]


def test_dart_reference_gets_the_image_start_of_the_unpadded_sequence(tiny_llava, images):
    """``PruneContext.llm_image_start`` is where the image starts in each row's unpadded sequence (DART's
    reference builds its pivot set from absolute positions; its code hard-codes 35): a left-padded batch
    keeps what each prompt keeps alone."""
    model, processor = tiny_llava
    processor.tokenizer.padding_side = "left"
    texts = ["USER: <image>\nwhat is in the image ? ASSISTANT:", "USER: here is a picture , look : <image>\nwhat ? ASSISTANT:"]
    config = PruneConfig("dart", keep=10, fidelity="reference", options={"pivot_image_tokens": 2, "pivot_text_tokens": 2})

    def run(rows):
        inputs = processor(images=[images[r] for r in rows], text=[texts[r] for r in rows], padding=True, return_tensors="pt")
        prepared = prepare_pruned(
            get_adapter(model), config, inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"]
        )
        starts = []
        fn = prepared.plan.method.fn

        def spy(ctx, k):
            starts.append(ctx.llm_image_start)
            return fn(ctx, k)

        prepared.plan.method = dataclasses.replace(prepared.plan.method, fn=spy)
        with torch.no_grad(), prepared.active():
            model(**prepared.model_kwargs(), use_cache=True)
        want = []
        for b in range(len(rows)):
            ids = inputs["input_ids"][b][inputs["attention_mask"][b].bool()]
            want.append(int((ids == model.config.image_token_id).nonzero()[0]))
        assert starts == want
        return [r.kept_indices.tolist() for r in prepared.reports], starts

    batch, starts = run([0, 1])
    assert starts[0] != starts[1]
    assert batch == [run([0])[0][0], run([1])[0][0]]


IN_LLM = sorted(name for name in METHODS.names() if METHODS.get(name).in_llm)


@pytest.mark.parametrize(
    ("method", "fidelity"),
    [(m, "improved") for m in IN_LLM] + [(m, "reference") for m in IN_LLM if METHODS.get(m).supports_reference],
)
@pytest.mark.parametrize("keep", [0.5, 5])
def test_ragged_batch_equals_one_by_one(tiny_llava, images, method, fidelity, keep):
    """Prompts with 1 and 2 images keep different numbers of visual tokens: the shorter row is left-padded
    with hidden slots from layer K on; greedy tokens and kept indices equal each prompt run alone
    (FastV's per-step reference included: every step is such a prefill)."""
    model, processor = tiny_llava
    processor.tokenizer.padding_side = "left"
    texts = ["USER: <image>\nwhat is in the image ? ASSISTANT:", "USER: <image> <image>\ncompare them ASSISTANT:"]
    groups = [[images[0]], [images[1], images[2]]]

    def run(rows):
        inputs = processor(
            images=[im for r in rows for im in groups[r]], text=[texts[r] for r in rows], padding=True, return_tensors="pt"
        )
        config = PruneConfig(method, keep=keep, fidelity=fidelity)
        prepared = prepare_pruned(
            get_adapter(model), config, inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"]
        )
        return prepared, generate_pruned(model, prepared, max_new_tokens=5)

    batch, together = run([0, 1])
    assert batch.plan.stages[-1].filler is not None  # really ragged: row 0 was padded
    for row in range(2):
        single, alone = run([row])
        first = 0 if row == 0 else 1
        for i, report in enumerate(single.reports):
            assert report.kept_indices.tolist() == batch.reports[first + i].kept_indices.tolist()
        assert together[row, : alone.shape[1]].tolist() == alone[0].tolist()


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_ragged_batch_without_padding_equals_one_by_one(tiny_llava, images, attention):
    """Rows of equal length (no padding: SDPA gets no mask) that keep different counts, and eager
    attention's additive mask: the padding slots are hidden all the same."""
    model, processor = tiny_llava
    model = copy.deepcopy(model)
    model.set_attn_implementation(attention)
    processor.tokenizer.padding_side = "left"
    two = "USER: <image> <image>\ncompare them ASSISTANT:"
    length = len(processor(images=images[1:3], text=[two], return_tensors="pt")["input_ids"][0])
    words = 0
    while len(processor(images=images[:1], text=["USER: <image>\n" + "a " * words + "ASSISTANT:"], return_tensors="pt")["input_ids"][0]) < length:
        words += 1
    texts = ["USER: <image>\n" + "a " * words + "ASSISTANT:", two]
    groups = [[images[0]], [images[1], images[2]]]

    def run(rows):
        inputs = processor(
            images=[im for r in rows for im in groups[r]], text=[texts[r] for r in rows], padding=True, return_tensors="pt"
        )
        prepared = prepare_pruned(
            get_adapter(model), PruneConfig("fastv", keep=5), inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"]
        )
        return inputs, prepared, generate_pruned(model, prepared, max_new_tokens=5)

    inputs, batch, together = run([0, 1])
    assert bool(inputs["attention_mask"].all())  # no padding at all
    assert batch.plan.stages[-1].filler is not None
    for row in range(2):
        _, single, alone = run([row])
        assert together[row, : alone.shape[1]].tolist() == alone[0].tolist()


def test_ragged_batch_with_an_attention_that_takes_no_4d_mask_is_a_clear_error():
    from types import SimpleNamespace

    from zooprune.adapters.in_llm import InLLMPlan
    from zooprune.methods import get_method

    lm = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2"))
    plan = InLLMPlan(get_method("dart"), PruneConfig("dart", keep=4), lm, [], [], torch.ones(2, 6))
    filler = torch.tensor([[True, False, False], [False, False, False]])
    with pytest.raises(ValueError, match="in-LLM method 'dart': the prompts of this batch keep different numbers"):
        plan._hide_fillers(None, filler, query_length=3)
    with pytest.raises(ValueError, match="not a 4-D tensor"):
        plan._hide_fillers(torch.ones(2, 6), filler, query_length=3)
    assert plan._hide_fillers("anything", None, query_length=3) == "anything"  # not ragged: untouched
