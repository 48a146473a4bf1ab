"""LLaVA-NeXT (anyres) through the plugin (one engine): a tiny random LLaVA-NeXT (the bench preset
``llava-next-tiny``, 128 wide for vLLM's CPU attention), saved in the llava-hf layout. For images of
several aspect ratios: the placeholders equal vLLM's stock count when unpruned; per-crop budgets
with the newlines kept on top give the HF path's kept indices (``zooprune.load``, float32) for every
supported method, per crop and with ``budget="whole"``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402

from zooprune.adapters.llava_next import LlavaNextAdapter  # noqa: E402
from zooprune.methods import METHODS  # noqa: E402

from .conftest import random_image  # noqa: E402
from .vllm_support import chat_prompt, engine, save_for_vllm  # noqa: E402

SIZES = [(112, 56), (100, 160), (56, 56)]  # (width, height): 2 crops wide, tall (unpadded), one crop


def cases() -> list[tuple[str, dict]]:
    out = []
    for name, method in sorted(METHODS.items()):
        if method.in_llm or not method.needs <= LlavaNextAdapter.provides:
            continue
        estimators = ("closed-form", "central") if method.takes_estimator else (None,)
        out += [(name, {} if est is None else {"estimator": est}) for est in estimators]
    return out


@pytest.fixture(scope="module")
def next_dir(tmp_path_factory):
    from zooprune.bench.synthetic import parse_shape, synthetic_llava

    model, processor = synthetic_llava(parse_shape("llava-next-tiny,hidden=128")[1], seed=0)
    return save_for_vllm(model, processor, tmp_path_factory.mktemp("tiny-llava-next-vllm"))


@pytest.fixture(scope="module")
def llm(next_dir):
    with engine(next_dir, max_model_len=256) as llm:
        yield llm


@pytest.fixture(scope="module")
def hf_vlm(next_dir):
    import zooprune

    return zooprune.load(str(next_dir), method="none", dtype=torch.float32)


def test_anyres_kept_indices_equal_the_hf_path(llm, hf_vlm, next_dir):
    from vllm import SamplingParams

    from zooprune.vllm.reports import take_reports

    question = "what is in the image ?"
    prompt = chat_prompt(question, next_dir)
    image_token = hf_vlm.adapter.image_token_id
    checked = 0
    for i, size in enumerate(SIZES):
        image = random_image(20 + i, size)
        (stock,) = llm.generate([{"prompt": prompt, "multi_modal_data": {"image": image}}], SamplingParams(max_tokens=1))
        full = sum(t == image_token for t in stock.prompt_token_ids)
        for method, options in cases():
            for keep, budget in ((6, "per-crop"), (0.5, "per-crop"), (9, "whole")):
                settings = {"method": method, "keep": keep, "seed": 4, "budget": budget, **options}
                req = {"prompt": prompt, "multi_modal_data": {"image": image}, "mm_processor_kwargs": {"zooprune": settings}}
                try:
                    expected = (
                        hf_vlm.using(method=method, keep=keep, seed=4, budget=budget, **options)
                        .prepare([image], [question])
                        .reports[0]
                    )
                except ValueError:  # e.g. pool on the whole pool of crops: no grid in the HF path either
                    continue
                (out,) = llm.generate([req], SamplingParams(max_tokens=1, temperature=0.0))
                reports = llm.apply_model(take_reports)[0]
                placeholders = sum(t == image_token for t in out.prompt_token_ids)
                assert expected.tokens_before == full, (size, method)
                assert placeholders == expected.tokens_after, (size, method, options, keep, budget)
                if not METHODS.get(method).prunes:
                    assert reports == []
                    continue
                (report,) = reports
                assert report["kept_indices"] == expected.kept_indices.tolist(), (size, method, options, keep, budget)
                checked += 1
    assert checked >= 30
