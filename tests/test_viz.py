"""Token overlays and comparison figures: geometry against the real processor, pixel-exact dimming."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import zooprune
from zooprune.cli import main
from zooprune.cli.common import DEFAULT_MODEL
from zooprune.report import PruneReport
from zooprune.viz import crop_geometry, heatmap, kept_mask, overlay, run_methods, sensitivity_report
from zooprune.viz.figure import comparison_figure, save_figure
from zooprune.viz.overlay import UNSEEN_BLEND, UNSEEN_GREY


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def report_for(
    kept: list[int], grid: tuple[int, int] = (4, 4), scores: torch.Tensor | None = None
) -> PruneReport:
    n = grid[0] * grid[1]
    return PruneReport(
        method="test",
        keep=len(kept),
        tokens_before=n,
        tokens_after=len(kept),
        kept_indices=torch.tensor(kept),
        scores=scores,
        grid=grid,
        model_type="llava",
    )


def test_crop_geometry_matches_clip_resize_and_center_crop(tiny_llava) -> None:
    _, processor = tiny_llava  # shortest edge 32, center crop 32 x 32
    wide = crop_geometry((60, 40), processor.image_processor)
    # 60 x 40 -> 48 x 32, crop columns 8..40 -> original 10..50
    assert wide.box == pytest.approx((10.0, 0.0, 50.0, 40.0))
    tall = crop_geometry((30, 90), processor.image_processor)
    # 30 x 90 -> 32 x 96, crop rows 32..64 -> original 30..60
    assert tall.box == pytest.approx((0.0, 30.0, 30.0, 60.0))
    boxes = wide.token_pixel_boxes((4, 4))
    assert boxes.shape == (16, 4)
    assert boxes[0].tolist() == [10, 0, 20, 10] and boxes[-1].tolist() == [40, 30, 50, 40]


@pytest.mark.parametrize("size", [(300, 200), (120, 260), (64, 64)])
def test_token_boxes_are_what_the_processor_feeds_each_patch(tiny_llava, size) -> None:
    """Paint every token's box in its own colour, run the real processor, and read each patch's centre."""
    _, processor = tiny_llava
    grid, patch = (4, 4), 8
    geometry = crop_geometry(size, processor.image_processor)
    boxes = geometry.token_pixel_boxes(grid)
    colours = np.array([[16 * i, 255 - 16 * i, (97 * i) % 256] for i in range(16)], dtype=np.uint8)
    canvas = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    for (x0, y0, x1, y1), colour in zip(boxes, colours):
        canvas[y0:y1, x0:x1] = colour
    pixels = processor.image_processor(images=Image.fromarray(canvas), return_tensors="np")["pixel_values"][0]
    mean = np.array(processor.image_processor.image_mean)[:, None, None]
    std = np.array(processor.image_processor.image_std)[:, None, None]
    seen = np.rint((pixels * std + mean) * 255).transpose(1, 2, 0)  # (32, 32, 3)
    for token, colour in enumerate(colours):
        r, c = divmod(token, grid[1])
        centre = seen[r * patch + patch // 2, c * patch + patch // 2]
        assert np.abs(centre - colour).max() <= 3, (size, token, centre, colour)


def test_overlay_dims_exactly_the_dropped_patches(tiny_llava) -> None:
    _, processor = tiny_llava
    image = noise(60, 40)
    kept = [0, 5, 6, 15]
    out = overlay(image, report_for(kept), processor, dim=0.25)
    assert out.size == image.size and out.mode == "RGB"
    src = np.asarray(image).astype(np.float64)
    got = np.asarray(out).astype(np.float64)
    expected = src * (1 - UNSEEN_BLEND) + UNSEEN_GREY * UNSEEN_BLEND  # margins outside the crop
    boxes = crop_geometry(image.size, processor.image_processor).token_pixel_boxes((4, 4))
    for token, (x0, y0, x1, y1) in enumerate(boxes):
        expected[y0:y1, x0:x1] = src[y0:y1, x0:x1] * (1.0 if token in kept else 0.25)
    assert np.array_equal(got, np.rint(expected))
    # kept patches are pixel-identical to the input; every dropped patch is darker on average
    for token, (x0, y0, x1, y1) in enumerate(boxes):
        region, original = got[y0:y1, x0:x1], src[y0:y1, x0:x1]
        if token in kept:
            assert np.array_equal(region, original)
        else:
            assert region.mean() < 0.3 * original.mean() + 1
    # the 10-px margins left and right were never seen: greyed, neither kept nor dimmed
    assert np.array_equal(got[:, :10], np.rint(expected[:, :10]))


def test_kept_mask() -> None:
    report = report_for([1, 2, 3])
    assert kept_mask(report).nonzero()[0].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="out of range"):
        kept_mask(report_for([16]))


def test_overlay_rejects_layouts_it_cannot_map(tiny_llava) -> None:
    _, processor = tiny_llava
    no_grid = report_for([0])
    no_grid.grid = None
    with pytest.raises(ValueError, match="no token grid"):
        overlay(noise(32, 32), no_grid, processor)
    wrong = report_for([0], grid=(3, 3))
    wrong.tokens_before = 10
    with pytest.raises(ValueError, match="does not cover"):
        overlay(noise(32, 32), wrong, processor)


def test_heatmap_orders_patches_by_score(tiny_llava) -> None:
    _, processor = tiny_llava
    scores = torch.arange(16, dtype=torch.float32)
    image = Image.new("RGB", (32, 32), (0, 0, 0))
    out = np.asarray(heatmap(image, report_for([0], scores=scores), processor, cmap="gray", alpha=1.0))
    centres = [int(out[r * 8 + 4, c * 8 + 4, 0]) for r in range(4) for c in range(4)]
    assert centres == sorted(centres) and centres[0] == 0 and centres[-1] == 255
    with pytest.raises(ValueError, match="no per-token scores"):
        heatmap(image, report_for([0]), processor)


def test_methods_on_the_tiny_model_give_overlays_that_match_their_reports(tiny_llava_dir) -> None:
    vlm = zooprune.load(tiny_llava_dir, keep=5, seed=0)
    image = noise(48, 40, seed=7)
    runs = run_methods(vlm, image, "what is in the image ?", ["zoo", "divprune", "pool", "fastv"], 5, 2)
    assert [r.method for r in runs] == ["zoo", "divprune", "pool", "fastv"]
    src = np.asarray(image).astype(np.float64)
    boxes = crop_geometry(image.size, vlm.processor.image_processor).token_pixel_boxes((4, 4))
    for run in runs:
        assert run.report.grid == (4, 4) and run.report.tokens_before == 16
        kept = set(run.report.kept_indices.tolist())
        assert 0 < len(kept) <= 16
        got = np.asarray(overlay(image, run.report, vlm.processor)).astype(np.float64)
        for token, (x0, y0, x1, y1) in enumerate(boxes):
            want = src[y0:y1, x0:x1] * (1.0 if token in kept else 0.25)
            assert np.array_equal(got[y0:y1, x0:x1], np.rint(want)), (run.method, token)
    sensitivity = sensitivity_report(vlm, image, "what is in the image ?", runs)
    assert sensitivity is runs[0].report and sensitivity.scores is not None
    fig = comparison_figure(image, runs, vlm.processor, sensitivity, prompt="what is in the image ?", dpi=50)
    width, height = fig.get_size_inches() * 50
    [path] = save_figure(fig, tiny_llava_dir.parent / "figure.png")
    with Image.open(path) as png:
        # four 3.2-inch panels a row, two rows as tall as a 48 x 40 picture plus captions, at 50 dpi
        assert png.size[0] == round(width) == 4 * 160
        assert abs(png.size[1] - height) <= 1 and abs(height - 2 * (3.2 * 40 / 48 + 1.0) * 50) < 1e-6


def test_sensitivity_is_scored_when_zoo_was_not_run(tiny_llava_dir) -> None:
    vlm = zooprune.load(tiny_llava_dir, method="divprune", keep=4)
    image = noise(40, 40, seed=2)
    runs = run_methods(vlm, image, "describe this picture", ["random"], 4, 1)
    report = sensitivity_report(vlm, image, "describe this picture", runs)
    assert report.method == "zoo" and report.scores is not None and report.scores.shape == (16,)
    assert vlm.config.method == "divprune"  # the runs and the scoring pass leave the configuration alone


def test_viz_command_writes_the_figure(tiny_llava_dir, tmp_path, capsys) -> None:
    image_path = tmp_path / "in.png"
    noise(64, 48, seed=1).save(image_path)
    out = tmp_path / "fig.png"
    code = main(
        ["viz", "--model", str(tiny_llava_dir), "--image", str(image_path), "--prompt", "what color ?",
         "--methods", "zoo,random", "--keep", "4", "--max-new-tokens", "2", "--dpi", "40", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "[zoo]" in printed and "kept 4/16 tokens" in printed
    with Image.open(out) as png:  # input, zoo, random, heatmap: one row of four 3.2-inch panels, 64 x 48
        assert png.size == (round(4 * 3.2 * 40), round((3.2 * 48 / 64 + 1.0) * 40))


def test_imports_stay_light() -> None:
    """``import zooprune`` / ``zooprune.viz`` / the CLI load neither matplotlib nor gradio."""
    code = (
        "import sys, zooprune, zooprune.viz, zooprune.cli; "
        "print([m for m in ('matplotlib', 'gradio', 'playwright') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(not DEFAULT_MODEL.is_dir(), reason="the embedded testbed model is not in this checkout")
def test_embedded_model_figure_and_overlays(tmp_path, capsys) -> None:
    """The default model (no --model): 224 px, 14 x 14 tokens; overlays follow kept_indices exactly."""
    from zooprune.eval.data import generated_items

    item = generated_items(7, 13, "v2")[12]  # the default model's testbed: "what number is on the white tile?"
    image_path = tmp_path / "scene.png"
    item.image.save(image_path)
    out = tmp_path / "fig.png"
    argv = ["viz", "--image", str(image_path), "--prompt", item.question, "--methods", "zoo,divprune"]
    assert main([*argv, "--keep", "24", "--max-new-tokens", "2", "--dpi", "40", "--out", str(out)]) == 0
    assert "kept 24/196 tokens" in capsys.readouterr().out
    with Image.open(out) as png:  # input, zoo, divprune, heatmap: one row of four square panels
        assert png.size == (round(4 * 3.2 * 40), round(4.2 * 40))
    vlm = zooprune.load(DEFAULT_MODEL, keep=24)
    [run] = run_methods(vlm, item.image, item.question, ["zoo"], 24, max_new_tokens=2)
    assert run.report.grid == (14, 14)
    got = np.asarray(overlay(item.image, run.report, vlm.processor)).astype(np.float64)
    src = np.asarray(item.image.convert("RGB")).astype(np.float64)
    kept = set(run.report.kept_indices.tolist())
    for token, (x0, y0, x1, y1) in enumerate(
        crop_geometry(item.image.size, vlm.processor.image_processor).token_pixel_boxes((14, 14))
    ):
        assert (x1 - x0, y1 - y0) == (16, 16)  # 224 px image, 16 px patches: no resize, no crop
        assert np.array_equal(
            got[y0:y1, x0:x1], np.rint(src[y0:y1, x0:x1] * (1.0 if token in kept else 0.25))
        )
