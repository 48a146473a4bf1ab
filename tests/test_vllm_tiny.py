"""The plugin on the tiny random LLaVA of ``zooprune.testing.tiny`` (one engine): vision layer -2, so
vLLM builds a truncated CLIP tower and [CLS] attention comes from its last built layer; attention
sharpened, so selections are not all ties; 128 wide (vLLM's CPU attention needs head_dim >= 32).
Saved, then put in the llava-hf key layout (``zooprune.hf_layout``), which stock vLLM needs. Kept indices equal the HF path's
(float32) for every supported method at a count and a ratio budget, on random images.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402

from zooprune.adapters.llava import LlavaAdapter  # noqa: E402
from zooprune.methods import METHODS  # noqa: E402

from .conftest import random_image  # noqa: E402
from .vllm_support import chat_prompt, engine, save_for_vllm  # noqa: E402

N_VISUAL = 16  # 32 px / 8 px patches


def cases() -> list[tuple[str, dict]]:
    out = []
    for name, method in sorted(METHODS.items()):
        if method.in_llm or not method.needs <= LlavaAdapter.provides:
            continue
        estimators = ("closed-form", "jvp", "central") if method.takes_estimator else (None,)
        out += [(name, {} if est is None else {"estimator": est}) for est in estimators]
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from zooprune.testing.tiny import tiny_llava

    # 128 wide: head_dim 32 (vLLM's CPU attention rejects the default tiny's 16)
    model, processor = tiny_llava(seed=0, hidden=128)
    return save_for_vllm(model, processor, tmp_path_factory.mktemp("tiny-llava-vllm"))


@pytest.fixture(scope="module")
def llm(tiny_dir):
    with engine(tiny_dir, max_model_len=128) as llm:
        yield llm


@pytest.fixture(scope="module")
def hf_vlm(tiny_dir):
    import zooprune

    return zooprune.load(str(tiny_dir), method="none", dtype=torch.float32)


def test_kept_indices_equal_the_hf_path_on_the_tiny_llava(llm, hf_vlm, tiny_dir):
    from vllm import SamplingParams

    from zooprune.vllm.reports import take_reports

    question = "what is in the image ?"
    prompt = chat_prompt(question, tiny_dir)
    images = [random_image(11, (40, 40)), random_image(12, (64, 48))]
    checked = 0
    for method, options in cases():
        for keep in (5, 0.5):
            for image in images:
                settings = {"method": method, "keep": keep, "seed": 2, **options}
                req = {"prompt": prompt, "multi_modal_data": {"image": image}, "mm_processor_kwargs": {"zooprune": settings}}
                (out,) = llm.generate([req], SamplingParams(max_tokens=1, temperature=0.0))
                reports = llm.apply_model(take_reports)[0]
                expected = hf_vlm.using(method=method, keep=keep, seed=2, **options).prepare([image], [question]).reports[0]
                placeholders = sum(t == hf_vlm.adapter.image_token_id for t in out.prompt_token_ids)
                assert placeholders == expected.tokens_after, (method, options, keep)
                if not METHODS.get(method).prunes:
                    assert reports == [] and placeholders == N_VISUAL
                    continue
                (report,) = reports
                assert report["kept_indices"] == expected.kept_indices.tolist(), (method, options, keep)
                checked += 1
    assert checked >= 20
