"""Qwen2.5-VL through the plugin (one engine, plus one stock-vLLM run in a child process): a tiny
random Qwen2.5-VL (``zooprune.testing.tiny``'s, 128 wide with head_dim 32 for vLLM's CPU attention,
attention sharpened) saved with safetensors.

Checked: keep-all through the plugin == stock vLLM (greedy tokens, wide / tall / square images);
kept indices == the HF path's (``zooprune.load``, float32) for every supported method; the kept
tokens' positions (the plugin's, and vLLM's EVS ``recompute_mrope_positions`` fed the same
channels) == their unpruned grid positions == the HF path's ``position_ids``; pruned greedy tokens
== the HF path's; bad requests -> clear errors.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402

from zooprune.adapters.qwen2_vl import Qwen2VLAdapter  # noqa: E402
from zooprune.methods import METHODS  # noqa: E402

from .conftest import random_image  # noqa: E402
from .vllm_support import chat_prompt, engine, run_stock  # noqa: E402

SIZES = [(140, 84), (84, 168), (112, 112)]  # (width, height): merged grids 3 x 5, 6 x 3, 4 x 4
QUESTION = "what is in the image ?"
NEW_TOKENS = 8


def supported() -> list[tuple[str, dict]]:
    out = []
    for name, method in sorted(METHODS.items()):
        if method.in_llm or not method.prunes or not method.needs <= Qwen2VLAdapter.provides:
            continue
        estimators = (None, "jvp", "central") if method.takes_estimator else (None,)
        out += [(name, {} if est is None else {"estimator": est}) for est in estimators]
    return out


def build_tiny(path):
    """The tiny Qwen2.5-VL of ``zooprune.testing.tiny`` widened to 128 (4 heads of 32), saved."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from zooprune.testing.tiny import finish, tiny_qwen2_5_vl

    model, processor = tiny_qwen2_5_vl(0)
    config = model.config
    text = config.text_config
    text.hidden_size, text.intermediate_size, text.num_attention_heads, text.num_key_value_heads = (
        128,
        256,
        4,
        2,
    )
    text.head_dim = 32
    text.rope_parameters = {**text.rope_parameters, "mrope_section": [4, 6, 6]}  # sums to head_dim / 2
    config.vision_config.out_hidden_size = 128
    torch.manual_seed(0)
    model = finish(Qwen2_5_VLForConditionalGeneration(config), processor.tokenizer)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny-qwen2_5_vl-vllm"))


@pytest.fixture(scope="module")
def llm(qwen_dir):
    with engine(qwen_dir, limit_mm_per_prompt={"image": 2, "video": 0}) as llm:
        yield llm


@pytest.fixture(scope="module")
def hf_vlm(qwen_dir):
    import zooprune

    return zooprune.load(str(qwen_dir), method="none", dtype=torch.float32)


def request(prompt: str, image, settings: dict | None = None) -> dict:
    req = {"prompt": prompt, "multi_modal_data": {"image": image}}
    if settings is not None:
        req["mm_processor_kwargs"] = {"zooprune": settings}
    return req


def greedy(llm, reqs: list[dict]) -> list:
    from vllm import SamplingParams

    return llm.generate(reqs, SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0))


def hf_tokens(vlm, image) -> tuple[list[int], object]:
    """The HF path's greedy new tokens (up to EOS) and its prepared inputs."""
    from zooprune.vlm import generate_pruned

    prepared = vlm.prepare([image], [QUESTION])
    new = generate_pruned(vlm.model, prepared, max_new_tokens=NEW_TOKENS, do_sample=False)[0].tolist()
    eos = vlm.model.generation_config.eos_token_id
    return (new[: new.index(eos) + 1] if eos in new else new), prepared


def test_keep_all_equals_stock_vllm(llm, qwen_dir, tmp_path):
    prompt = chat_prompt(QUESTION, qwen_dir)
    paths = []
    for i, size in enumerate(SIZES):
        paths.append(tmp_path / f"image{i}.png")
        random_image(10 + i, size).save(paths[-1])
    stock = run_stock(qwen_dir, [{"prompt": prompt, "image": str(p)} for p in paths], tmp_path, NEW_TOKENS)
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in paths]
    for settings in (None, {"method": "none"}, {"method": "zoo", "keep": 1.0}):
        outs = greedy(llm, [request(prompt, im, settings) for im in images])
        for out, ref, size in zip(outs, stock, SIZES):
            assert list(out.prompt_token_ids) == ref["prompt_token_ids"], (size, settings)
            assert list(out.outputs[0].token_ids) == ref["token_ids"], (size, settings)


def test_kept_indices_equal_the_hf_path(llm, hf_vlm, qwen_dir):
    from zooprune.vllm.reports import take_reports

    prompt = chat_prompt(QUESTION, qwen_dir)
    image_token = hf_vlm.adapter.image_token_id
    llm.apply_model(take_reports)
    checked = set()
    for i, size in enumerate(SIZES[:2]):
        image = random_image(20 + i, size)
        for method, options in supported():
            for keep in (5, 0.5):
                settings = {"method": method, "keep": keep, "seed": 3, **options}
                expected = hf_vlm.using(**settings).prepare([image], [QUESTION]).reports[0]
                (out,) = greedy(llm, [request(prompt, image, settings)])
                (report,) = llm.apply_model(take_reports)[0]
                assert sum(t == image_token for t in out.prompt_token_ids) == expected.tokens_after, (
                    size,
                    settings,
                )
                assert report["kept_indices"] == expected.kept_indices.tolist(), (size, settings)
                checked.add(method)
    assert {"zoo", "divprune"} <= checked


def test_kept_positions_are_the_unpruned_grid_positions_and_the_hf_paths(llm, hf_vlm, qwen_dir):
    """The plugin's positions of a pruned prompt (``prompt_positions``, what the engine's
    ``get_mrope_input_positions`` returns) == the HF path's ``position_ids`` == vLLM's own
    ``recompute_mrope_positions`` fed the same 4-channel rows; image tokens keep (0, row, col)."""
    from vllm.multimodal.video_prune.evs import recompute_mrope_positions

    from zooprune.vllm.qwen_positions import media_positions, prompt_positions
    from zooprune.vllm.reports import take_reports

    config = hf_vlm.model.config
    prompt = chat_prompt(QUESTION, qwen_dir)
    llm.apply_model(take_reports)
    for i, size in enumerate(SIZES):
        image = random_image(30 + i, size)
        for method in ("zoo", "divprune"):
            settings = {"method": method, "keep": 6, "seed": 1}
            vlm = hf_vlm.using(**settings)
            prepared = vlm.prepare([image], [QUESTION])
            (out,) = greedy(llm, [request(prompt, image, settings)])
            (report,) = llm.apply_model(take_reports)[0]
            ids = torch.tensor(out.prompt_token_ids)
            grid_thw = vlm.encode_inputs([image], [QUESTION])["image_grid_thw"][0].tolist()
            kept = torch.tensor(report["kept_indices"])
            slots = (ids == config.image_token_id).nonzero().flatten()
            rows = media_positions(grid_thw, 2, kept)  # (k, 4)
            positions, delta = prompt_positions(ids.numel(), [(int(slots[0]), rows)])
            width = grid_thw[2] // 2
            unpruned = torch.stack([torch.zeros_like(kept), kept // width, kept % width]) + int(slots[0])
            assert torch.equal(positions[:, slots], unpruned), (size, method)
            assert torch.equal(positions, prepared.inputs["position_ids"][:, 0].long()), (size, method)
            assert delta == int(positions.max()) + 1 - ids.numel()
            evs, evs_delta = recompute_mrope_positions(
                ids,
                [rows.T],
                torch.arange(ids.numel()).expand(3, -1).clone(),
                0,
                config.vision_start_token_id,
                config.image_token_id,
                config.video_token_id,
            )
            assert torch.equal(evs, positions) and evs_delta == delta, (size, method)


def test_pruned_greedy_output_equals_the_hf_path(llm, hf_vlm, qwen_dir):
    prompt = chat_prompt(QUESTION, qwen_dir)
    for i, size in enumerate(SIZES):
        image = random_image(40 + i, size)
        for settings in ({"method": "zoo", "keep": 6, "seed": 2}, {"method": "divprune", "keep": 0.4}):
            expected, prepared = hf_tokens(hf_vlm.using(**settings), image)
            (out,) = greedy(llm, [request(prompt, image, settings)])
            assert len(out.prompt_token_ids) == prepared.spliced.input_ids.shape[1], (size, settings)
            assert list(out.outputs[0].token_ids) == expected, (size, settings)


def test_two_pruned_images_in_one_prompt_equal_the_hf_path(llm, hf_vlm):
    """Positions of several pruned images (each keeps its grid positions, text resumes after each
    unpruned extent): greedy tokens and kept indices equal the HF path's."""
    from vllm import SamplingParams

    from zooprune.vllm.reports import take_reports
    from zooprune.vlm import generate_pruned

    images = [random_image(50, SIZES[1]), random_image(51, SIZES[0])]
    settings = {"method": "zoo", "keep": 5, "seed": 0}
    vlm = hf_vlm.using(**settings)
    prepared = vlm.prepare([images], [QUESTION])
    new = generate_pruned(vlm.model, prepared, max_new_tokens=NEW_TOKENS, do_sample=False)[0].tolist()
    eos = vlm.model.generation_config.eos_token_id
    expected = new[: new.index(eos) + 1] if eos in new else new
    llm.apply_model(take_reports)
    (out,) = llm.generate(
        [
            {
                "prompt": vlm.chat_prompt(QUESTION, 2),
                "multi_modal_data": {"image": images},
                "mm_processor_kwargs": {"zooprune": settings},
            }
        ],
        SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0),
    )
    reports = llm.apply_model(take_reports)[0]
    assert [r["kept_indices"] for r in reports] == [r.kept_indices.tolist() for r in prepared.reports]
    assert len(out.prompt_token_ids) == prepared.spliced.input_ids.shape[1]
    assert list(out.outputs[0].token_ids) == expected


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"method": "zoo", "keep": -3}, ["keep"]),
        ({"method": "zoo", "keep": "lots"}, ["budget", "lots"]),
        ({"method": "nope"}, ["nope"]),
        ({"method": "fastv", "keep": 4}, ["inside the language model"]),
        ({"method": "prunesid", "keep": 4}, ["cls_attention", "Qwen2.5-VL"]),
        ({"method": "zoo", "keep": 4, "estimator": "closed-form"}, ["closed-form", "projector"]),
    ],
)
def test_bad_requests_are_clear_errors(llm, qwen_dir, settings, words):
    from vllm.exceptions import VLLMValidationError

    with pytest.raises((VLLMValidationError, ValueError)) as err:
        greedy(llm, [request(chat_prompt(QUESTION, qwen_dir), random_image(1, (84, 84)), settings)])
    assert "zooprune" in str(err.value) and all(w in str(err.value) for w in words), str(err.value)

