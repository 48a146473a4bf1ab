"""Qwen2.5-VL through the plugin with a deployment default (``hf_overrides``), in its own module so
only one engine is alive at a time: the default sets every request's budget, a request's own
setting overrides it, and the kept indices equal the HF path's.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402

from .conftest import random_image  # noqa: E402
from .test_vllm_qwen import QUESTION, SIZES, build_tiny, greedy, request  # noqa: E402
from .vllm_support import chat_prompt, engine  # noqa: E402


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny-qwen2_5_vl-default"))


@pytest.fixture(scope="module")
def hf_vlm(qwen_dir):
    import zooprune

    return zooprune.load(str(qwen_dir), method="none", dtype=torch.float32)


def test_deployment_default_and_request_override(qwen_dir, hf_vlm):
    """``hf_overrides`` sets every request's budget; a request's own setting overrides it."""
    from zooprune.vllm.reports import take_reports

    prompt = chat_prompt(QUESTION, qwen_dir)
    image = random_image(60, SIZES[2])
    image_token = hf_vlm.adapter.image_token_id
    default = {"method": "divprune", "keep": 4}
    with engine(qwen_dir, hf_overrides={"zooprune": default}, max_model_len=256) as llm:
        for settings, expected in ((None, default), ({"keep": 7}, {**default, "keep": 7})):
            (out,) = greedy(llm, [request(prompt, image, settings)])
            (report,) = llm.apply_model(take_reports)[0]
            hf = hf_vlm.using(**expected).prepare([image], [QUESTION]).reports[0]
            assert sum(t == image_token for t in out.prompt_token_ids) == expected["keep"]
            assert report["kept_indices"] == hf.kept_indices.tolist()
