"""InternVL dynamic tiling: tiles row-major plus a thumbnail, each tile's pixel-shuffled grid;
every token's box checked against transformers' image processor and ``pixel_shuffle``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil
from transformers.models.internvl.modeling_internvl import InternVLModel

from zooprune.report import PruneReport
from zooprune.viz import overlay, token_layout
from zooprune.viz.overlay import VIEW_GAP

TILE, PATCH, SIDE = 112, 14, 4  # 8 x 8 patches per tile, pixel-shuffled to 4 x 4 tokens


@pytest.fixture(scope="module")
def image_processor() -> GotOcr2ImageProcessorPil:
    return GotOcr2ImageProcessorPil(
        size={"height": TILE, "width": TILE}, crop_to_patches=True, min_patches=1, max_patches=4
    )


def test_pixel_shuffle_keeps_raster_order() -> None:
    """Merged token (r, c) holds patches rows 2r..2r+1, cols 2c..2c+1 (what the layout assumes)."""
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    coords = torch.stack([rows, cols], -1).float()[None]  # (1, 8, 8, 2)
    shuffled = InternVLModel.pixel_shuffle(None, coords, 0.5)[0]  # (4, 4, 8)
    for r in range(SIDE):
        for c in range(SIDE):
            sources = shuffled[r, c].view(4, 2)
            assert set(sources[:, 0].tolist()) == {2 * r, 2 * r + 1}
            assert set(sources[:, 1].tolist()) == {2 * c, 2 * c + 1}


def report(n: int, kept: list[int] | None = None, grid: tuple[int, int] | None = None) -> PruneReport:
    kept = list(range(n)) if kept is None else kept
    return PruneReport("test", len(kept), n, len(kept), torch.tensor(kept), grid=grid, model_type="internvl")


@pytest.mark.parametrize("size", [(240, 110), (100, 300), (230, 240)])
def test_every_token_box_is_what_its_tile_sees(image_processor, size) -> None:
    width, height = size
    tiles = image_processor(images=Image.new("RGB", size), return_tensors="np")["pixel_values"].shape[0]
    n = tiles * SIDE * SIDE
    views = token_layout(size, report(n), image_processor)
    assert [v.name for v in views] == ["tiles", "thumbnail"]
    assert sorted(np.concatenate([v.indices for v in views]).tolist()) == list(range(n))
    mean = np.array(image_processor.image_mean)[:, None, None]
    std = np.array(image_processor.image_std)[:, None, None]
    rng = np.random.default_rng(0)
    for view in views:
        palette = rng.choice(np.array([0, 85, 170, 255]), size=(len(view.indices), 3)).astype(np.uint8)
        canvas = np.zeros((height, width, 3), dtype=np.uint8)
        for (x0, y0, x1, y1), colour in zip(view.boxes, palette):
            canvas[y0:y1, x0:x1] = colour
        seen = image_processor(images=Image.fromarray(canvas), return_tensors="np")["pixel_values"]
        seen = np.rint((seen * std + mean) * 255)  # (tiles, 3, 112, 112)
        for token, colour in zip(view.indices, palette):
            tile, pos = divmod(int(token), SIDE * SIDE)
            r, c = divmod(pos, SIDE)
            cell = TILE // SIDE
            centre = seen[tile, :, r * cell + cell // 2, c * cell + cell // 2]
            assert np.abs(centre - colour).max() <= 12, (size, view.name, token, centre, colour)


def test_single_tile_images_use_the_report_grid(image_processor) -> None:
    [view] = token_layout((120, 110), report(16, grid=(4, 4)), image_processor)
    assert view.seen == (0, 0, 120, 110) and view.boxes[-1].tolist() == [90, 82, 120, 110]


def test_tiled_overlay_shows_tiles_and_thumbnail(image_processor) -> None:
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (110, 240, 3), dtype=np.uint8))
    n = 3 * 16  # 2 x 1 tiles + thumbnail
    out = overlay(image, report(n, kept=[0, 17, 47]), image_processor)
    assert out.size == (2 * 240 + VIEW_GAP, 110)
    got, src = np.asarray(out).astype(np.float64), np.asarray(image).astype(np.float64)
    views = token_layout(image.size, report(n), image_processor)
    for offset, view in zip((0, 240 + VIEW_GAP), views):
        for token, (x0, y0, x1, y1) in zip(view.indices, view.boxes):
            want = src[y0:y1, x0:x1] * (1.0 if token in (0, 17, 47) else 0.25)
            assert np.array_equal(got[y0:y1, offset + x0 : offset + x1], np.rint(want))
    with pytest.raises(ValueError, match="tiled layout"):
        token_layout(image.size, report(40), image_processor)
