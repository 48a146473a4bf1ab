"""Qwen2-VL-style dynamic resolution: the merged token grid tiles the whole resized image; each
token's box checked against transformers' own image processor output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from zooprune.report import PruneReport
from zooprune.viz import overlay, token_layout

PATCH, MERGE = 14, 2


@pytest.mark.parametrize("size", [(150, 90), (90, 200), (224, 224)])
def test_merged_tokens_cover_what_their_patches_see(size) -> None:
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=224 * 224)
    _, h, w = image_processor(images=Image.new("RGB", size), return_tensors="np")["image_grid_thw"][0]
    grid = (int(h) // MERGE, int(w) // MERGE)
    n = grid[0] * grid[1]
    report = PruneReport("test", n, n, n, torch.arange(n), grid=grid, model_type="qwen2_vl")
    [view] = token_layout(size, report, image_processor)
    assert view.seen == (0, 0, *size)  # nothing cropped away
    rng = np.random.default_rng(0)
    palette = rng.choice(np.array([0, 85, 170, 255]), size=(n, 3)).astype(np.uint8)
    canvas = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    for (x0, y0, x1, y1), colour in zip(view.boxes, palette):
        canvas[y0:y1, x0:x1] = colour
    patches = image_processor(images=Image.fromarray(canvas), return_tensors="np")["pixel_values"]
    # rows: merged token k owns patches 4k..4k+3 (2 x 2); each (C, temporal, 14, 14), normalised
    patches = patches.reshape(n, MERGE * MERGE, 3, 2, PATCH, PATCH)[:, :, :, 0, PATCH // 2, PATCH // 2]
    mean, std = np.array(image_processor.image_mean), np.array(image_processor.image_std)
    seen = np.rint((patches * std + mean) * 255)  # (n, 4, 3)
    assert np.abs(seen - palette[:, None, :].astype(np.float64)).max() <= 12


def test_dynamic_overlay_is_image_sized_and_dims_dropped_tokens() -> None:
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=224 * 224)
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (90, 150, 3), dtype=np.uint8))
    report = PruneReport("test", 2, 15, 2, torch.tensor([0, 14]), grid=(3, 5), model_type="qwen2_vl")
    out = np.asarray(overlay(image, report, image_processor)).astype(np.float64)
    src = np.asarray(image).astype(np.float64)
    assert out.shape == src.shape
    [view] = token_layout(image.size, report, image_processor)
    for token, (x0, y0, x1, y1) in zip(view.indices, view.boxes):
        want = src[y0:y1, x0:x1] * (1.0 if token in (0, 14) else 0.25)
        assert np.array_equal(out[y0:y1, x0:x1], np.rint(want))
