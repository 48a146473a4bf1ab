"""Saved LLaVA checkpoints in the llava-hf key layout (``vision_tower.vision_model.*``), which stock
vLLM loads (``tests/test_vllm_llava.py`` runs stock vLLM on the committed testbed checkpoint)."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open

from zooprune.hf_layout import llava_hf_key, needs_llava_hf_layout, to_llava_hf_layout

from .vllm_support import TESTBED


def keys(directory) -> list[str]:
    out = []
    for file in sorted(directory.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            out += list(f.keys())
    return out


def test_key_rename():
    assert llava_hf_key("vision_tower.embeddings.patch_embedding.weight") == (
        "vision_tower.vision_model.embeddings.patch_embedding.weight"
    )
    assert llava_hf_key("vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias").count("vision_model") == 1
    assert llava_hf_key("multi_modal_projector.linear_1.weight") == "multi_modal_projector.linear_1.weight"
    assert needs_llava_hf_layout({"model_type": "llava", "vision_config": {"model_type": "clip_vision_model"}})
    assert not needs_llava_hf_layout({"model_type": "qwen2_vl", "vision_config": {"model_type": "qwen2_vl"}})


def test_committed_testbed_checkpoint_is_in_the_llava_hf_layout():
    tower = [k for k in keys(TESTBED) if k.startswith("vision_tower.")]
    assert tower and all(k.startswith("vision_tower.vision_model.") for k in tower)


def test_tiny_checkpoint_relayout_loads_identically_in_transformers(tmp_path):
    from transformers import LlavaForConditionalGeneration

    from zooprune.testing.tiny import BUILDERS, save_tiny_llava

    path = tmp_path / "tiny"
    BUILDERS["llava"](seed=0)[0].save_pretrained(path)  # transformers' own layout
    before = LlavaForConditionalGeneration.from_pretrained(path).state_dict()
    renamed = to_llava_hf_layout(path)
    assert renamed > 0
    assert all(k.startswith("vision_tower.vision_model.") for k in keys(path) if k.startswith("vision_tower."))
    assert to_llava_hf_layout(path) == 0  # idempotent
    after = LlavaForConditionalGeneration.from_pretrained(path).state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert json.loads((path / "config.json").read_text())["model_type"] == "llava"
    saved = save_tiny_llava(tmp_path / "saved", seed=0)  # make-tiny and the tests' checkpoints: llava-hf layout
    assert to_llava_hf_layout(saved) == 0
