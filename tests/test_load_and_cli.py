"""zooprune.load on a save_pretrained folder, `zooprune run`, and clear errors on bad input."""

from __future__ import annotations

import json

import pytest
import torch

import zooprune
from zooprune.cli import main
from zooprune.config import parse_keep, resolve_budget, validate_keep


def test_load_and_generate(tiny_llava_dir, images):
    vlm = zooprune.load(tiny_llava_dir, method="zoo", keep=4, seed=0)
    result = vlm.generate(images[:2], ["what is in the image ?", "describe this picture"], max_new_tokens=4)
    assert len(result.texts) == 2 and all(isinstance(t, str) and t for t in result.texts)
    for report in result.reports:
        assert (report.tokens_before, report.tokens_after) == (16, 4)
        assert report.kept_indices.shape == (4,) and report.scores.shape == (16,)
        assert {"encode", "score", "select", "prefill", "decode"} <= set(report.timings)
    again = vlm.generate(images[:2], ["what is in the image ?", "describe this picture"], max_new_tokens=4)
    assert again.texts == result.texts
    assert all(torch.equal(a.kept_indices, b.kept_indices) for a, b in zip(again.reports, result.reports))


def test_load_reproduces_the_stock_model_with_everything_kept(tiny_llava_dir, images):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    vlm = zooprune.load(tiny_llava_dir, method="none")
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_llava_dir)
    prompt = vlm.chat_prompt("what is in the image ?")
    assert prompt.count("<image>") == 1
    stock = model.generate(
        **processor(images=images[0], text=prompt, return_tensors="pt"), max_new_tokens=6, do_sample=False
    )
    new = stock[0, -6:]
    ours = vlm.generate([images[0]], ["what is in the image ?"], max_new_tokens=6)
    assert ours.texts[0] == processor.decode(new, skip_special_tokens=True).strip()


def test_multi_image_prompt(tiny_llava_dir, images):
    vlm = zooprune.load(tiny_llava_dir, method="zoo", keep=3)
    result = vlm.generate(
        [[images[0], images[1]], images[2]], ["what is on the left ?", "what ?"], max_new_tokens=3
    )
    assert len(result.texts) == 2 and len(result.reports) == 3


def test_cli_run_prints_an_answer(tiny_llava_dir, images, tmp_path, capsys):
    path = tmp_path / "img.png"
    images[0].save(path)
    args = ["run", "--model", str(tiny_llava_dir), "--image", str(path), "--prompt", "what is in the image ?"]
    assert main(args + ["--keep", "25%", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].strip() and "kept 4/16 visual tokens" in out[1]
    assert main(args + ["--keep", "4", "--json", "--max-new-tokens", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reports"][0]["tokens_after"] == 4 and len(data["reports"][0]["kept_indices"]) == 4


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "/nonexistent/model"], "model directory not found"),
        (["--image", "/nonexistent.png"], "image file not found"),
        (["--method", "zoop"], "Unknown pruning method 'zoop'.*Did you mean 'zoo'"),
    ],
)
def test_cli_errors_are_clear(tiny_llava_dir, images, tmp_path, capsys, extra, message):
    path = tmp_path / "img.png"
    images[0].save(path)
    args = {"--model": str(tiny_llava_dir), "--image": str(path), "--prompt": "what ?"}
    args.update(dict(zip(extra[::2], extra[1::2])))
    assert main(["run", *[x for kv in args.items() for x in kv]]) == 2
    import re

    assert re.search(message, capsys.readouterr().err)


def test_cli_rejects_bad_budgets(capsys):
    for bad in ("0", "-3", "1.5", "abc"):
        with pytest.raises(SystemExit):
            main(["run", "--model", "m", "--image", "i", "--prompt", "p", "--keep", bad])
        assert "--keep" in capsys.readouterr().err


def test_budget_rules():
    assert resolve_budget(0.1112, 576) == 64 and resolve_budget(0.3334, 576) == 192
    assert (
        resolve_budget(64, 576) == 64 and resolve_budget(1000, 576) == 576 and resolve_budget(1.0, 576) == 576
    )
    assert resolve_budget(0.001, 16) == 1
    assert parse_keep("11.1%") == pytest.approx(0.111) and parse_keep("64") == 64
    for bad, err in (
        (0, ValueError),
        (-1, ValueError),
        (1.2, ValueError),
        (0.0, ValueError),
        (float("nan"), ValueError),
        (True, TypeError),
        ("64", TypeError),
    ):
        with pytest.raises(err):
            validate_keep(bad)


def test_api_errors_name_the_problem(tiny_llava_dir, images, tmp_path):
    with pytest.raises(ValueError, match="keep ratio must be in"):
        zooprune.load(tiny_llava_dir, keep=1.5)
    with pytest.raises(ValueError, match="keep must be >= 1"):
        zooprune.load(tiny_llava_dir, keep=0)
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        zooprune.load(tmp_path / "missing")
    vlm = zooprune.load(tiny_llava_dir, keep=4)
    with pytest.raises(ValueError, match="no image given"):
        vlm.generate(None, ["what ?"])
    with pytest.raises(ValueError, match="prompt has no image"):
        vlm.generate([[]], ["what ?"])
    with pytest.raises(ValueError, match="1 image entries for 2 prompts"):
        vlm.generate([images[0]], ["a", "b"])
    with pytest.raises(FileNotFoundError, match="image file not found"):
        vlm.generate([tmp_path / "nope.png"], ["what ?"])
    with pytest.raises(ValueError, match="prompt must be a non-empty string"):
        vlm.generate([images[0]], [""])


def test_unsupported_model_type_lists_supported(tmp_path):
    from transformers import BertConfig

    BertConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    ).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="unsupported model type 'bert'; supported model types: .*llava"):
        zooprune.load(tmp_path)


def test_methods_command_lists_the_registry(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in zooprune.list_methods():
        assert name in out
    assert "options: estimator=None, num_directions=64, step=0.01, chunk_size=None" in out  # typed options
    assert "options: layer=2, pivot_image_tokens=4, pivot_text_tokens=4" in out


def test_make_tiny_writes_a_loadable_checkpoint(tmp_path, images):
    assert main(["make-tiny", str(tmp_path / "tiny")]) == 0
    vlm = zooprune.load(tmp_path / "tiny", keep=2)
    assert vlm.generate([images[0]], ["what ?"], max_new_tokens=2).reports[0].tokens_after == 2


def test_support_matrix_is_derived_from_the_registries(capsys):
    from zooprune.adapters import ADAPTERS
    from zooprune.methods import METHODS

    assert main(["methods", "--matrix"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split("|")[2:-1] == [f" {n} " for n in METHODS.names()]
    assert len(lines) == 2 + len(ADAPTERS)
    (llava,) = [line for line in lines if line.startswith("| llava |")]
    assert all(c.strip() == "yes" for c in llava.split("|")[2:-1])  # LLaVA-1.5 runs every method
    (qwen,) = [line for line in lines if line.startswith("| qwen2-vl |")]
    assert " - " in qwen  # no [CLS] attention, no in-LLM hooks for mRoPE: some methods cannot run
