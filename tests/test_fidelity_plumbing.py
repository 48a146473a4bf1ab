"""``fidelity`` is a real setting everywhere a configuration is built (PruneConfig, load, pruned,
PrunedVLM.using, the CLI, lmms-eval model_args), and reports name the ZOO estimator that ran."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from zooprune.cli.common import add_model_args
from zooprune.config import PruneConfig
from zooprune.lmms_eval.args import parse_model_args
from zooprune.vlm import PrunedVLM

from .conftest import random_image

PROMPT = "what is in the image ?"


def test_cli_and_model_args_take_fidelity():
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    assert parser.parse_args(["--model", "m"]).fidelity == "improved"
    assert parser.parse_args(["--model", "m", "--fidelity", "reference"]).fidelity == "reference"
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "m", "--fidelity", "exact"])
    assert parse_model_args({"pretrained": "p", "method": "zoo", "fidelity": "reference"}).fidelity == "reference"
    assert parse_model_args({"pretrained": "p"}).fidelity == "improved"
    with pytest.raises(ValueError, match="method 'cdpruner' has no fidelity='reference'"):
        parse_model_args({"pretrained": "p", "method": "cdpruner", "fidelity": "reference"})


def test_reports_name_the_estimator_and_the_fidelity(tiny_llava):
    model, processor = tiny_llava
    vlm = PrunedVLM(model, processor, PruneConfig(method="zoo", keep=4))
    image = random_image(5)
    default = vlm.prepare([image], [PROMPT]).reports[0]
    assert (default.estimator, default.fidelity) == ("closed-form", "improved")
    central = vlm.using(estimator="central", num_directions=8).prepare([image], [PROMPT]).reports[0]
    assert central.estimator == "central"
    reference = vlm.using(fidelity="reference").prepare([image], [PROMPT]).reports[0]
    assert (reference.estimator, reference.fidelity) == ("central-fp16", "reference")
    assert json.loads(json.dumps(reference.to_dict()))["estimator"] == "central-fp16"
    assert vlm.prepare([image], [PROMPT]).reports[0].kept_indices.tolist() == default.kept_indices.tolist()
    assert vlm.using(method="divprune").prepare([image], [PROMPT]).reports[0].estimator is None
    with pytest.raises(ValueError, match="method 'cdpruner' has no fidelity='reference'"):
        vlm.using(method="cdpruner", fidelity="reference")


def test_run_command_prints_the_estimator(tiny_llava_dir, tmp_path, capsys):
    from zooprune.cli import main

    path = tmp_path / "img.png"
    random_image(2).save(path)
    base = ["run", "--model", str(tiny_llava_dir), "--image", str(path), "--prompt", PROMPT, "--keep", "4"]
    assert main(base) == 0
    assert "[zoo, estimator closed-form] kept 4/16" in capsys.readouterr().out
    assert main([*base, "--fidelity", "reference", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["reports"][0]
    assert (report["estimator"], report["fidelity"]) == ("central-fp16", "reference")


def test_pruned_and_in_llm_hooks_get_the_fidelity(tiny_llava):
    """DART's reference keeps 4 + 8 * (k // 8) tokens: the in-LLM hooks ran it in reference mode."""
    import zooprune

    model, processor = tiny_llava
    inputs = processor(images=random_image(3), text="USER: <image>\nwhat is in the image ? ASSISTANT:", return_tensors="pt")
    with zooprune.pruned(model, method="dart", keep=12, fidelity="reference") as handle:
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert handle.reports[0].tokens_after == 4 + 8 * (12 // 8)
    with zooprune.pruned(model, method="dart", keep=12) as handle:
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert handle.reports[0].tokens_after == 12


def test_pruned_fastv_reference_reselects_at_every_step(tiny_llava):
    """``zooprune.pruned`` on a model's own ``generate`` (input_ids + pixel_values) runs FastV's per-step
    reference like ``generate_pruned`` does (pinned to an uncached recomputation in test_in_llm.py)."""
    import zooprune
    from zooprune.adapters import get_adapter
    from zooprune.config import PruneConfig
    from zooprune.pipeline import prepare
    from zooprune.vlm import generate_pruned

    model, processor = tiny_llava
    inputs = processor(images=random_image(3), text="USER: <image>\nwhat is in the image ? ASSISTANT:", return_tensors="pt")
    with zooprune.pruned(model, method="fastv", keep=4, fidelity="reference") as handle:
        with torch.no_grad():
            attached = model.generate(**inputs, max_new_tokens=5, do_sample=False)[:, inputs["input_ids"].shape[1] :]
    config = PruneConfig("fastv", keep=4, fidelity="reference")
    prepared = prepare(get_adapter(model), config, inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"])
    direct = generate_pruned(model, prepared, max_new_tokens=5)
    assert torch.equal(attached, direct)
    assert len(prepared.plan.steps) == direct.shape[1]
    assert handle.reports[0].fidelity == "reference"
    assert handle.reports[0].kept_indices.tolist() == prepared.plan.steps[0][0].tolist()
