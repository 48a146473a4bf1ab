"""Overlays for every model family with a tiny checkpoint: the real reports of a real run, each
token's patch dimmed or not exactly as ``kept_indices`` says, in every view of the layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import zooprune
from zooprune.testing.tiny import BUILDERS, save_tiny_llava
from zooprune.viz import kept_mask, overlay, run_methods, token_layout
from zooprune.viz.overlay import VIEW_GAP

VIEWS = {
    "llava": ["image"],
    "llava_next": ["base", "high-res"],
    "qwen2_vl": ["image"],
    "qwen2_5_vl": ["image"],
    "internvl": ["tiles", "thumbnail"],
}


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_overlay_of_a_real_run_matches_its_report(family, tmp_path_factory) -> None:
    path = save_tiny_llava(tmp_path_factory.mktemp(family), seed=0, family=family)
    vlm = zooprune.load(path, keep=6, seed=0)
    image = Image.fromarray(np.random.default_rng(9).integers(0, 256, (110, 240, 3), dtype=np.uint8))
    [run] = run_methods(vlm, image, "what is in the image ?", ["divprune"], 6, max_new_tokens=1)
    report = run.report
    views = token_layout(image.size, report, vlm.processor)
    assert [v.name for v in views] == VIEWS.get(family, [v.name for v in views])
    out = np.asarray(overlay(image, report, vlm.processor)).astype(np.float64)
    assert out.shape == (110, len(views) * 240 + (len(views) - 1) * VIEW_GAP, 3)
    src = np.asarray(image).astype(np.float64)
    kept = kept_mask(report)
    assert kept.sum() == report.tokens_after
    for v, view in enumerate(views):
        x_off = v * (240 + VIEW_GAP)
        for token, (x0, y0, x1, y1) in zip(view.indices, view.boxes):
            want = src[y0:y1, x0:x1] * (1.0 if kept[token] else 0.25)
            assert np.array_equal(out[y0:y1, x_off + x0 : x_off + x1], np.rint(want)), (
                family,
                view.name,
                token,
            )


def test_methods_a_family_cannot_run_are_reported_not_raised(tmp_path_factory) -> None:
    path = save_tiny_llava(tmp_path_factory.mktemp("llava"), seed=0)
    vlm = zooprune.load(path, keep=4)
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    runs = run_methods(vlm, image, "what color ?", ["divprune", "no-such-method"], 4, 1, keep_going=True)
    assert runs[0].report is not None and runs[0].error is None
    assert runs[1].report is None and "no-such-method" in runs[1].error
    assert runs[1].summary().startswith("not run:")
    with pytest.raises((KeyError, ValueError)):
        run_methods(vlm, image, "what color ?", ["no-such-method"], 4, 1)
