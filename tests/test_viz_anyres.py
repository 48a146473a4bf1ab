"""LLaVA-NeXT (anyres) overlays: every packed token's region checked against transformers' own
image processor (crops) and ``pack_image_features`` (unpadding and packed order)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.models.llava_next.modeling_llava_next import LlavaNextModel

from zooprune.report import PruneReport
from zooprune.viz import overlay, token_layout
from zooprune.viz.overlay import VIEW_GAP

CROP, PATCH, SIDE = 56, 14, 4  # 56-px crops of 4 x 4 tokens
PINPOINTS = [[56, 112], [112, 56], [112, 112], [112, 168], [168, 112]]


@pytest.fixture(scope="module")
def processor() -> SimpleNamespace:
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": CROP},
        crop_size={"height": CROP, "width": CROP},
        image_grid_pinpoints=PINPOINTS,
    )
    return SimpleNamespace(image_processor=image_processor, patch_size=PATCH)


def packed_sources(image_size: tuple[int, int], crops: int) -> np.ndarray:
    """``(M, 2)`` (crop, token) of every packed token, ``(-1, -1)`` for newlines, from transformers."""
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(image_size=CROP, patch_size=PATCH),
        text_config=LlamaConfig(),
        image_grid_pinpoints=PINPOINTS,
    )
    ids = torch.stack(
        torch.meshgrid(torch.arange(crops), torch.arange(SIDE * SIDE), indexing="ij"), -1
    ).float()
    width, height = image_size
    packed, _ = LlavaNextModel.pack_image_features(
        SimpleNamespace(config=config),
        [ids],
        torch.tensor([[height, width]]),
        "default",
        torch.tensor([-1.0, -1.0]),
    )
    return packed[0].round().long().numpy()


def colours(n: int) -> np.ndarray:
    levels = np.array([0, 51, 102, 153, 204, 255])
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    return grid[np.random.default_rng(0).permutation(len(grid))[:n]].astype(np.uint8)


@pytest.mark.parametrize("size", [(150, 90), (90, 160), (100, 100), (200, 61)])
def test_every_token_box_is_what_its_crop_patch_sees(processor, size) -> None:
    width, height = size
    pixel_values = processor.image_processor(images=Image.new("RGB", size), return_tensors="np")[
        "pixel_values"
    ][0]
    crops = pixel_values.shape[0]
    sources = packed_sources(size, crops)
    views = token_layout(size, _report(len(sources)), processor)
    assert [v.name for v in views] == ["base", "high-res"]
    newlines = set(np.flatnonzero(sources[:, 0] < 0))
    drawn = np.concatenate([v.indices for v in views])
    assert len(drawn) + len(newlines) == len(sources) and not newlines & set(drawn.tolist())
    mean = np.array(processor.image_processor.image_mean)[:, None, None]
    std = np.array(processor.image_processor.image_std)[:, None, None]
    for view in views:
        palette = colours(len(view.indices))
        canvas = np.zeros((height, width, 3), dtype=np.uint8)
        for (x0, y0, x1, y1), colour in zip(view.boxes, palette):
            canvas[y0:y1, x0:x1] = colour
        seen = processor.image_processor(images=Image.fromarray(canvas), return_tensors="np")["pixel_values"][
            0
        ]
        seen = np.rint((seen * std + mean) * 255)  # (P, 3, 56, 56)
        checked = 0
        for token, colour, (x0, y0, x1, y1) in zip(view.indices, palette, view.boxes):
            crop, pos = sources[token]
            assert (crop == 0) == (view.name == "base")
            if min(x1 - x0, y1 - y0) < 4:  # a sliver at the padded edge: its patch is mostly padding
                continue
            r, c = divmod(int(pos), SIDE)
            centre = seen[crop, :, r * PATCH + PATCH // 2, c * PATCH + PATCH // 2]
            assert np.abs(centre - colour).max() <= 12, (size, view.name, token, centre, colour)
            checked += 1
        assert checked >= 0.8 * len(view.indices)


def _report(n: int, kept: list[int] | None = None, model_type: str = "llava_next") -> PruneReport:
    kept = list(range(n)) if kept is None else kept
    return PruneReport("test", len(kept), n, len(kept), torch.tensor(kept), model_type=model_type)


def test_anyres_overlay_shows_base_and_high_res_views(processor) -> None:
    size = (150, 90)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 150, 3), dtype=np.uint8))
    crops = processor.image_processor(images=image, return_tensors="np")["pixel_values"][0].shape[0]
    n = len(packed_sources(size, crops))
    views = token_layout(size, _report(n), processor)
    kept = [int(views[0].indices[0]), int(views[1].indices[3]), int(views[1].indices[-1])]
    out = overlay(image, _report(n, kept), processor)
    assert out.size == (2 * 150 + VIEW_GAP, 90)
    got = np.asarray(out).astype(np.float64)
    src = np.asarray(image).astype(np.float64)
    for offset, view in zip((0, 150 + VIEW_GAP), views):
        for token, (x0, y0, x1, y1) in zip(view.indices, view.boxes):
            want = src[y0:y1, x0:x1] * (1.0 if token in kept else 0.25)
            assert np.array_equal(got[y0:y1, offset + x0 : offset + x1], np.rint(want))
    assert (got[:, 150 : 150 + VIEW_GAP] == 255).all()


def test_anyres_token_count_must_match(processor) -> None:
    with pytest.raises(ValueError, match="anyres layout gives"):
        token_layout((150, 90), _report(7), processor)


@pytest.mark.parametrize(("limit", "size"), [(9, (150, 90)), (1, (150, 90)), (1, (90, 200)), (2, (300, 290))])
def test_onevision_downsampled_high_res_grid_has_the_packed_token_count(limit, size) -> None:
    """LLaVA-OneVision resizes high-res grids over ``anyres_max_N`` crops' worth: same region, fewer
    cells; the layout's token count must equal what the model packs."""
    from transformers import LlavaOnevisionConfig, SiglipVisionConfig
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )
    from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionModel

    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": CROP, "width": CROP}, image_grid_pinpoints=PINPOINTS
    )
    processor = SimpleNamespace(
        image_processor=image_processor,
        num_image_tokens=SIDE * SIDE,
        vision_aspect_ratio=f"anyres_max_{limit}",
    )
    crops = image_processor(images=Image.new("RGB", size), return_tensors="np")["pixel_values"][0].shape[0]
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(image_size=CROP, patch_size=PATCH).to_dict(),
        text_config=LlamaConfig().to_dict(),
        image_grid_pinpoints=PINPOINTS,
    )
    width, height = size
    packed, _ = LlavaOnevisionModel.pack_image_features(
        SimpleNamespace(config=config),
        [torch.zeros(crops, SIDE * SIDE, 2)],
        torch.tensor([[height, width]]),
        torch.tensor([1.0, 1.0]),
        f"anyres_max_{limit}",
    )
    views = token_layout(size, _report(packed[0].shape[0], model_type="llava_onevision"), processor)
    high = views[1]
    newlines = int((packed[0][:, 0] == 1.0).sum())
    assert newlines == high.grid[0]  # one newline per high-res row
    assert len(high.indices) == high.grid[0] * high.grid[1]
    # the cells still tile the image, up to the sliver unpadding rounds off (under one cell)
    cell_w, cell_h = width / high.grid[1], height / high.grid[0]
    assert high.boxes[:, 0].min() < cell_w and high.boxes[:, 2].max() > width - cell_w
    assert high.boxes[:, 1].min() < cell_h and high.boxes[:, 3].max() > height - cell_h
