"""Every model family with an adapter, on tiny random checkpoints: equivalence, ragged batches,
sensitivity through the family's projector, and LLaVA-NeXT's per-crop budgets."""

from __future__ import annotations

import pytest
import torch

from zooprune.adapters import get_adapter
from zooprune.config import PruneConfig
from zooprune.methods import METHODS
from zooprune.methods.zoo import draw_directions, sensitivity
from zooprune.pipeline import prepare as prepare_pruned
from zooprune.testing.tiny import BUILDERS
from zooprune.vlm import generate_pruned

from .conftest import random_image

SIZES = [(90, 60), (40, 70), (64, 64)]  # different sizes: ragged token counts for anyres families
FIXED_COUNT = {"llava", "gemma3"}  # families whose images always give the same number of tokens


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def family(request):
    model, processor = BUILDERS[request.param](seed=0)
    processor.tokenizer.padding_side = "left"
    return request.param, model, processor


def inputs_for(processor, images, prompts):
    """Each prompt through the processor's own chat template, one image each."""
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p}]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for p in prompts
    ]
    return processor(images=[[im] for im in images], text=texts, padding=True, return_tensors="pt")


def prepare(model, inputs, method, keep, budget="per-crop", **options):
    extras = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "pixel_values")}
    return prepare_pruned(
        get_adapter(model),
        PruneConfig(method, keep=keep, options=options, budget=budget),
        inputs["input_ids"],
        inputs["attention_mask"],
        inputs["pixel_values"],
        **extras,
    )


def test_keep_all_logits_identical_to_stock(family):
    name, model, processor = family
    inputs = inputs_for(processor, [random_image(0, SIZES[0])], ["what is in the image ?"])
    with torch.no_grad():
        stock = model(**inputs).logits
        for method in ("none", "zoo"):
            prepared = prepare(model, inputs, method, 1.0)
            assert torch.equal(model(**prepared.model_kwargs()).logits, stock), (name, method)


@pytest.mark.parametrize("method", ["zoo", "random", "divprune", "fastv"])
def test_ragged_batch_equals_one_by_one(family, method):
    name, model, processor = family
    images = [random_image(i, size) for i, size in enumerate(SIZES)]
    prompts = ["what is in the image ?", "how many ?", "describe this picture"]
    if not METHODS.get(method).needs <= get_adapter(model).provides:
        pytest.skip(f"{method} does not run on {name} (see the support matrix)")
    batch = prepare(model, inputs_for(processor, images, prompts), method, 0.5)
    together = generate_pruned(model, batch, max_new_tokens=5)
    for i in range(3):
        single = prepare(model, inputs_for(processor, images[i : i + 1], prompts[i : i + 1]), method, 0.5)
        alone = generate_pruned(model, single, max_new_tokens=5)[0]  # in-LLM methods choose here
        assert torch.equal(single.reports[0].kept_indices, batch.reports[i].kept_indices)
        assert torch.equal(together[i, : alone.numel()], alone)
    if name not in FIXED_COUNT:  # the three images really are ragged
        assert len({r.tokens_before for r in batch.reports}) > 1


def test_sensitivity_through_the_family_projector_matches_a_loop(family):
    name, model, processor = family
    inputs = inputs_for(processor, [random_image(5, SIZES[0])], ["what ?"])
    extras = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "pixel_values")}
    adapter = get_adapter(model)
    with torch.no_grad():
        (image,) = adapter.encode(inputs["pixel_values"], frozenset(), **extras)
        proj = adapter.float32_projector()
        u = draw_directions(6, image.features.shape[-1], torch.Generator().manual_seed(0))
        got = sensitivity(image.features, proj, directions=u)
        for i in range(0, image.features.shape[0], 7):  # every 7th token, one direction at a time
            x = image.features[i]
            want = torch.stack([((proj(x + 0.01 * d) - proj(x - 0.01 * d)) / 0.02).norm() for d in u]).mean()
            torch.testing.assert_close(got[i], want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("keep", [20, 0.3, 7])
def test_llava_next_per_crop_budgets_sum_to_the_request(keep):
    model, processor = BUILDERS["llava_next"](seed=0)
    inputs = inputs_for(processor, [random_image(1, (300, 200))], ["what ?"])
    prepared = prepare(model, inputs, "zoo", keep)
    (report,) = prepared.reports
    (image,) = get_adapter(model).encode(
        inputs["pixel_values"], frozenset(), image_sizes=inputs["image_sizes"]
    )
    budgeted = image.budgeted_tokens
    k = keep if isinstance(keep, int) else int(keep * budgeted)
    newlines = image.always_keep.numel()
    assert report.tokens_after == k + newlines  # newline tokens on top of the budget
    kept = set(report.kept_indices.tolist())
    assert set(image.always_keep.tolist()) <= kept
    per_crop = [len(kept & set(g.tolist())) for g in image.groups]
    assert (
        sum(per_crop) == k and max(per_crop) - min(per_crop) <= 1
    )  # equal split (all crops are large enough)
    whole = prepare(model, inputs, "zoo", keep, budget="whole").reports[0]
    assert whole.tokens_after == k + newlines


@pytest.mark.parametrize("method", ["visionzip", "pool"])
def test_llava_next_merging_methods_work_per_crop(method):
    model, processor = BUILDERS["llava_next"](seed=0)
    inputs = inputs_for(processor, [random_image(1, (300, 200))], ["what ?"])
    (report,) = prepare(model, inputs, method, 20).reports
    (image,) = get_adapter(model).encode(
        inputs["pixel_values"], frozenset(), image_sizes=inputs["image_sizes"]
    )
    newlines = image.always_keep.numel()
    assert newlines < report.tokens_after <= 20 + newlines
    assert set(image.always_keep.tolist()) <= set(report.kept_indices.tolist())


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen_kept_tokens_keep_their_mrope_positions(name):
    model, processor = BUILDERS[name](seed=0)
    processor.tokenizer.padding_side = "left"
    images = [random_image(i, size) for i, size in enumerate(SIZES)]
    inputs = inputs_for(processor, images, ["what is in the image ?", "how many ?", "describe this picture"])
    prepared = prepare(model, inputs, "zoo", 0.5)
    full, _ = model.model.get_rope_index(
        inputs["input_ids"],
        mm_token_type_ids=inputs["mm_token_type_ids"],
        image_grid_thw=inputs["image_grid_thw"],
        attention_mask=inputs["attention_mask"],
    )
    for b, sources in enumerate(prepared.spliced.source_positions):
        original = full[:, b, inputs["attention_mask"][b].bool()]  # (3, L_b)
        pruned = prepared.model_kwargs()["position_ids"][:, b, prepared.spliced.attention_mask[b].bool()]
        assert torch.equal(pruned, original[:, sources])  # kept visual + all text keep their columns
        assert sources.numel() < original.shape[1]  # something was pruned
    assert model.model.rope_deltas is None  # no stale deltas left for the next call


def test_unsupported_method_on_a_family_is_a_clear_error():
    model, processor = BUILDERS["qwen2_vl"](seed=0)
    inputs = inputs_for(processor, [random_image(0, SIZES[0])], ["what ?"])
    with pytest.raises(
        ValueError, match="needs cls_attention, keys, which this model type \\(qwen2_vl\\) cannot provide"
    ):
        prepare(model, inputs, "visionzip", 2)


def test_saved_checkpoint_loads_and_generates(family, tmp_path):
    import zooprune
    from zooprune.testing.tiny import save_tiny_llava

    name, _, _ = family
    path = save_tiny_llava(tmp_path / name, family=name)
    vlm = zooprune.load(path, method="zoo", keep=0.5)
    result = vlm.generate(
        [random_image(0, SIZES[0]), random_image(1, SIZES[1])], ["what ?", "how many ?"], max_new_tokens=3
    )
    assert len(result.texts) == 2
    assert all(r.tokens_after < r.tokens_before for r in result.reports)


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_runs_where_the_support_matrix_says_so(family, method):
    name, model, processor = family
    inputs = inputs_for(processor, [random_image(3, (150, 100))], ["what is in the image ?"])
    supported = METHODS.get(method).needs <= get_adapter(model).provides
    if not supported:
        with pytest.raises(ValueError, match="cannot provide"):
            prepare(model, inputs, method, 0.5)
        return
    prepared = prepare(model, inputs, method, 0.5)
    generate_pruned(model, prepared, max_new_tokens=2)  # in-LLM methods choose during prefill
    (report,) = prepared.reports
    assert 1 <= report.tokens_after < report.tokens_before or method == "none"


def multi_image_inputs(processor, images, prompt):
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
    text = processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    return processor(images=[images], text=[text], return_tensors="pt")


def test_multi_image_prompt_keep_all_is_stock_and_pruning_runs(family):
    name, model, processor = family
    images = [random_image(7, (80, 60)), random_image(8, (60, 100))]
    inputs = multi_image_inputs(processor, images, "what is on the left ?")
    with torch.no_grad():
        stock = model(**inputs).logits
        assert torch.equal(model(**prepare(model, inputs, "none", 1.0).model_kwargs()).logits, stock)
    prepared = prepare(model, inputs, "zoo", 0.5)
    assert len(prepared.reports) == 2 and all(r.tokens_after < r.tokens_before for r in prepared.reports)
    generate_pruned(model, prepared, max_new_tokens=2)


def test_onevision_downsampled_grid_keeps_stock_equivalence_and_scores():
    """anyres_max_1 forces transformers to interpolate the high-resolution grid."""
    model, processor = BUILDERS["llava_onevision"](seed=0)
    model.config.vision_aspect_ratio = processor.vision_aspect_ratio = "anyres_max_1"
    inputs = inputs_for(processor, [random_image(2, (200, 100))], ["what ?"])
    with torch.no_grad():
        stock = model(**inputs).logits
        assert torch.equal(model(**prepare(model, inputs, "none", 1.0).model_kwargs()).logits, stock)
    (image,) = get_adapter(model).encode(
        inputs["pixel_values"], frozenset(), image_sizes=inputs["image_sizes"]
    )
    rows, cols = image.group_grids[1]
    assert rows * cols == image.groups[1].numel() and rows == image.always_keep.numel()
    (report,) = prepare(model, inputs, "zoo", 0.5).reports
    assert report.scores is not None and report.tokens_after < report.tokens_before


def test_make_tiny_offers_every_builder():
    from zooprune.cli.make_tiny import FAMILIES

    assert list(FAMILIES) == sorted(BUILDERS)


def test_the_image_matters_to_every_tiny_model(family):
    """Guard: if pruning did not change the logits, the equalities above would prove nothing."""
    name, model, processor = family
    inputs = inputs_for(processor, [random_image(4, SIZES[0])], ["what is in the image ?"])
    with torch.no_grad():
        full = model(**prepare(model, inputs, "none", 1.0).model_kwargs()).logits[0, -1]
        cut = model(**prepare(model, inputs, "random", 1).model_kwargs()).logits[0, -1]
    assert (full - cut).abs().max() > 1e-3, name


def test_pruned_attach_keep_all_generates_like_stock(family):
    import copy

    import zooprune

    name, model, processor = family
    model = copy.deepcopy(model)
    inputs = inputs_for(
        processor, [random_image(6, SIZES[0]), random_image(7, SIZES[1])], ["what ?", "how many ?"]
    )
    stock = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    with zooprune.pruned(model, method="none") as handle:
        same = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(same, stock), name
    with zooprune.pruned(model, method="random", keep=0.5) as handle:
        cut = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert cut.shape[0] == 2 and all(r.tokens_after < r.tokens_before for r in handle.reports)
    assert "generate" not in model.__dict__
