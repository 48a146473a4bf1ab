"""No hidden mutation, no raw tracebacks (issue 11, item 6): comparisons leave the PrunedVLM as
configured, PrunedVLM leaves the caller's tokenizer alone, unreadable images are clear CLI errors."""

from __future__ import annotations

import pytest
import torch

import zooprune
from zooprune.cli import main
from zooprune.config import PruneConfig
from zooprune.demo.compare import compare
from zooprune.testing.tiny import BUILDERS
from zooprune.viz import run_methods, sensitivity_report
from zooprune.vlm import PrunedVLM

from .conftest import random_image

PROMPT = "what is in the image ?"
ESTIMATOR = {"estimator": "central", "num_directions": 4}


def test_comparisons_leave_the_configuration_as_it_was(tiny_llava_dir) -> None:
    vlm = zooprune.load(tiny_llava_dir, method="random", keep=0.5, seed=3, budget="whole")
    before = vlm.config
    image = random_image(4)
    methods = ["divprune", "zoo", "fastv", "zoo-sensitivity", "random"]
    runs = run_methods(vlm, image, PROMPT, methods, 5, 1, estimator_options=ESTIMATOR)
    assert vlm.config == before
    # estimator options reach the estimator methods only; the others run with their defaults
    assert [run.error for run in runs] == [None] * len(methods)
    assert [run.report.tokens_after for run in runs] == [5] * len(methods)
    zoo = vlm.using(method="zoo", keep=5, **ESTIMATOR).prepare([image], [PROMPT]).reports[0]
    assert torch.equal(runs[1].report.kept_indices, zoo.kept_indices)
    assert torch.equal(runs[1].report.scores, zoo.scores)
    # the seed is the vlm's: random keeps what vlm.using(method="random") keeps
    again = vlm.using(method="random", keep=5).prepare([image], [PROMPT]).reports[0]
    assert torch.equal(runs[-1].report.kept_indices, again.kept_indices)

    # a heatmap pass when no estimator method ran, and the demo's comparison: still untouched
    report = sensitivity_report(vlm, image, PROMPT, runs[:1] + runs[2:3], ESTIMATOR)
    assert report.method == "zoo" and torch.equal(report.scores, zoo.scores)
    assert sensitivity_report(vlm, image, PROMPT, runs) is runs[1].report  # metadata, not the name
    compare(vlm, image, PROMPT, ["divprune", "zoo"], 4, max_new_tokens=1, estimator_options=ESTIMATOR)
    assert vlm.config == before


def test_estimator_options_for_a_method_without_an_estimator_are_not_passed(tiny_llava_dir) -> None:
    vlm = zooprune.load(tiny_llava_dir)
    [run] = run_methods(vlm, random_image(1), PROMPT, ["divprune"], 4, 1, estimator_options=ESTIMATOR)
    assert run.error is None and run.report.method == "divprune"
    with pytest.raises(ValueError, match="num_directions"):  # the estimator methods still check them
        run_methods(vlm, random_image(1), PROMPT, ["zoo"], 4, 1, estimator_options={"num_directions": 4})


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_generate_leaves_the_tokenizer_padding_side_alone(family) -> None:
    """The caller's tokenizer pads on the right; PrunedVLM pads its own batches on the left without
    changing it, and answers as with a left-padding tokenizer (prompts of different lengths)."""
    model, processor = BUILDERS[family](seed=0)
    images = [random_image(1, (60, 40)), random_image(2, (40, 60))]
    prompts = ["what is in the image ?", "what color is the circle on the left ? answer with a word ."]
    results = {}
    for side in ("right", "left"):
        processor.tokenizer.padding_side = side
        vlm = PrunedVLM(model, processor, PruneConfig(method="divprune", keep=3))
        results[side] = vlm.generate(images, prompts, max_new_tokens=3)
        assert processor.tokenizer.padding_side == side
    assert results["right"].texts == results["left"].texts
    for right, left in zip(results["right"].reports, results["left"].reports):
        assert torch.equal(right.kept_indices, left.kept_indices)


def _broken_files(tmp_path) -> list:
    garbage = tmp_path / "broken.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg \x00\x01\x02")
    whole = tmp_path / "whole.png"
    random_image(0, (64, 64)).save(whole)
    truncated = tmp_path / "truncated.png"
    data = whole.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return [garbage, truncated]


@pytest.mark.parametrize("command", ["run", "viz"])
def test_an_unreadable_image_is_a_clear_error_not_a_traceback(
    tiny_llava_dir, tmp_path, capsys, command
) -> None:
    for path in _broken_files(tmp_path):
        argv = [command, "--model", str(tiny_llava_dir), "--image", str(path), "--prompt", "what ?"]
        if command == "viz":
            argv += ["--out", str(tmp_path / "fig.png")]
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert f"zooprune {command}: error: cannot read image file {path}" in captured.err
        assert "Traceback" not in captured.err + captured.out
        assert len(captured.err.strip().splitlines()) == 1


def test_viz_gives_estimator_flags_to_the_estimator_methods_only(tiny_llava_dir, tmp_path, capsys) -> None:
    image = tmp_path / "in.png"
    random_image(1, (48, 40)).save(image)
    base = ["viz", "--model", str(tiny_llava_dir), "--image", str(image), "--prompt", "what color ?",
            "--keep", "4", "--max-new-tokens", "1", "--dpi", "20", "--out", str(tmp_path / "fig.png")]  # fmt: skip
    flags = ["--estimator", "central", "--num-directions", "4"]
    assert main([*base, "--methods", "divprune,zoo", *flags]) == 0
    printed = capsys.readouterr()
    assert "[divprune]" in printed.out and "[zoo]" in printed.out and "warning" not in printed.err
    # flags no chosen method uses, or that the estimator would ignore: one clear error, before loading
    assert main([*base, "--methods", "divprune", "--no-heatmap", *flags]) == 2
    assert "only methods that take a sensitivity estimator" in capsys.readouterr().err
    assert main([*base, "--methods", "zoo", "--num-directions", "4"]) == 2
    assert "option 'num_directions' of method 'zoo' is ignored" in capsys.readouterr().err
