"""`zooprune eval` generates the questions of the testbed a model was trained on (v1 or v2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zooprune.cli import main
from zooprune.eval.data import generated_items
from zooprune.testbed.questions_v2 import EVAL_SEED_V2, FAMILIES_V2, TRAIN_SEED_BASE_V2
from zooprune.testbed.variant import model_testbed_variant

MODELS = Path(__file__).resolve().parents[1] / "models"


def test_committed_models_are_recognised():
    assert model_testbed_variant(MODELS / "testbed-llava") == "v1"
    assert model_testbed_variant(MODELS / "testbed-llava-v2") == "v2"


def test_other_models_are_no_testbed(tmp_path, tiny_llava_dir):
    assert model_testbed_variant(tmp_path) is None  # no tokenizer.json
    assert model_testbed_variant("llava-hf/llava-1.5-7b-hf") is None  # a hub id
    assert model_testbed_variant(tiny_llava_dir) is None
    (tmp_path / "tokenizer.json").write_text("{not json")
    assert model_testbed_variant(tmp_path) is None
    v1 = json.loads((MODELS / "testbed-llava" / "tokenizer.json").read_text())
    v1["model"]["vocab"].pop("tile")  # one question word missing: not the v1 testbed's tokenizer
    (tmp_path / "tokenizer.json").write_text(json.dumps(v1))
    assert model_testbed_variant(tmp_path) is None


def test_generated_v2_items_are_v2_questions():
    items = generated_items(EVAL_SEED_V2, 16, "v2")
    assert [it.family for it in items[:8]] == list(FAMILIES_V2)
    assert items[0].uid == f"testbed-v2-{EVAL_SEED_V2}-0"
    assert [it.question for it in items] == [it.question for it in generated_items(EVAL_SEED_V2, 16, "v2")]
    v1 = generated_items(EVAL_SEED_V2, 16)
    assert {it.family for it in v1}.isdisjoint({"region", "scene"})


def test_generated_items_reject_training_seeds_and_unknown_variants():
    with pytest.raises(ValueError, match="v2 training seed"):
        generated_items(TRAIN_SEED_BASE_V2 + 3, 2, "v2")
    with pytest.raises(ValueError, match="unknown testbed variant 'v3'"):
        generated_items(7, 2, "v3")


def test_cli_eval_of_the_v2_model_asks_v2_questions(tmp_path):
    out = tmp_path / "results.json"
    args = ["eval", "--model", str(MODELS / "testbed-llava-v2"), "--methods", "none", "--num-samples", "16"]
    assert main([*args, "--output", str(out), "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert data["settings"]["testbed"] == "v2" and data["settings"]["testbed_seed"] == EVAL_SEED_V2
    assert set(data["results"][0]["per_family"]) == set(FAMILIES_V2)
