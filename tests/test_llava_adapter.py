"""LLaVA adapter: equivalence with the stock HF model, padding, attach/detach."""

from __future__ import annotations

import copy

import pytest
import torch

import zooprune
from zooprune.adapters import get_adapter
from zooprune.config import PruneConfig
from zooprune.pipeline import prepare as prepare_pruned


def inputs_for(processor, images, prompts):
    processor.tokenizer.padding_side = "left"
    texts = [f"USER: <image>\n{p} ASSISTANT:" for p in prompts]
    return processor(images=images, text=texts, padding=True, return_tensors="pt")


def test_keep_all_logits_identical_to_stock(tiny_llava, images):
    model, processor = tiny_llava
    inputs = inputs_for(processor, images[:1], ["what is in the image ?"])
    prepared = prepare_pruned(
        get_adapter(model),
        PruneConfig("zoo", keep=1.0), inputs["input_ids"], None, inputs["pixel_values"]
    )
    with torch.no_grad():
        assert torch.equal(model(**prepared.model_kwargs()).logits, model(**inputs).logits)


def test_encode_matches_get_image_features(tiny_llava, images):
    model, processor = tiny_llava
    pixel_values = inputs_for(processor, images[:2], ["a", "b"])["pixel_values"]
    with torch.no_grad():
        stock = model.model.get_image_features(pixel_values=pixel_values).pooler_output
        ours = get_adapter(model).encode(pixel_values, frozenset())
    for s, o in zip(stock, ours):
        assert torch.equal(s, o.projected)
        assert torch.equal(model.model.multi_modal_projector(o.features), o.projected)


def test_cls_attention_is_a_distribution_over_patches_from_the_read_layer(tiny_llava, images):
    model, processor = tiny_llava
    pixel_values = inputs_for(processor, images[:1], ["a"])["pixel_values"]
    eager = copy.deepcopy(model)
    eager.model.vision_tower.set_attn_implementation("eager")
    with torch.no_grad():
        (tokens,) = get_adapter(model).encode(pixel_values, frozenset({"cls_attention", "keys"}))
        out = eager.model.vision_tower(pixel_values, output_attentions=True, output_hidden_states=True)
    layer = get_adapter(model).vision_layer_index() - 1  # hidden_states[i] is the output of layer i - 1
    want = out.attentions[layer].mean(dim=1)[0, 0, 1:]  # (N,) heads averaged, from [CLS]
    torch.testing.assert_close(tokens.cls_attention, want, rtol=1e-5, atol=1e-6)
    assert tokens.keys.shape == (16, 4, 8)  # (N, heads, head_dim)


def test_pruned_attach_is_reversible_and_instance_only(tiny_llava, images):
    model, processor = tiny_llava
    model = copy.deepcopy(model)
    other = copy.deepcopy(model)
    inputs = inputs_for(processor, images[:2], ["what is in the image ?", "describe this picture"])
    stock = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    with zooprune.pruned(model, method="none") as handle:
        same = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        assert "generate" not in other.__dict__  # other instances untouched
    assert torch.equal(same, stock)
    assert handle.reports[0].tokens_after == 16
    assert not {"generate", "forward", "_zooprune_handle"} & set(model.__dict__)

    first = zooprune.pruned(model, method="random", keep=2)
    second = zooprune.pruned(model, method="zoo", keep=3)  # re-attaching replaces the first handle
    with torch.no_grad():
        logits = model(**inputs).logits
    assert second.reports[0].tokens_after == 3 and not first.reports
    assert logits.shape[1] == inputs["input_ids"].shape[1] - (16 - 3)  # one image per row
    first.remove()  # removing a stale handle changes nothing
    assert model.__dict__["_zooprune_handle"] is second
    second.remove()
    assert torch.equal(model.generate(**inputs, max_new_tokens=5, do_sample=False), stock)


def test_placeholder_mismatch_is_reported(tiny_llava, images):
    model, processor = tiny_llava
    inputs = inputs_for(processor, images[:1], ["what ?"])
    pixel_values = torch.cat([inputs["pixel_values"]] * 2)
    with pytest.raises(ValueError, match="image token"):
        prepare_pruned(get_adapter(model), PruneConfig("zoo", keep=4), inputs["input_ids"], None, pixel_values)


def test_half_precision_model_scores_like_float32(tiny_llava, images):
    """bf16 model: scores come from a float32 copy of its projector; ranking agrees with the float32 model."""
    model, processor = tiny_llava
    pixel_values = inputs_for(processor, images[:1], ["a"])["pixel_values"]
    half = copy.deepcopy(model).to(torch.bfloat16)
    cfg = PruneConfig("zoo", keep=4)
    ids = inputs_for(processor, images[:1], ["a"])["input_ids"]
    full = prepare_pruned(get_adapter(model), cfg, ids, None, pixel_values).reports[0].scores
    low = prepare_pruned(get_adapter(half), cfg, ids, None, pixel_values).reports[0].scores
    assert low.dtype == torch.float32 and low.unique().numel() == low.numel()
    torch.testing.assert_close(low, full, rtol=5e-2, atol=0)  # bf16 vision features + weights
