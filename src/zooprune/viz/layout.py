"""Token layouts: which image region each of an image's visual tokens covers, as one or more views.

* LLaVA-1.5 style (one crop): a single view, the processor's resize + center crop cut into the
  report's ``rows x cols`` grid (see :mod:`zooprune.viz.geometry`).
* LLaVA-NeXT / LLaVA-OneVision anyres (the image processor has ``image_grid_pinpoints``): a ``base`` view (the
  whole image squashed to one square crop) and a ``high-res`` view (the image resized into the
  best pinpoint resolution, padded, cut into crops, then unpadded by the model), in the model's
  packed order ``base tokens, then per high-res row: its tokens and one image-newline token``.
  Newline tokens cover no region and belong to no view. OneVision's ``anyres_max_N`` downsampling
  of large high-res grids is followed (fewer, larger cells over the same region).
* InternVL dynamic tiling (the image processor has ``crop_to_patches``): a ``tiles`` view (the
  image resized to ``cols x rows`` tiles, read row-major, each tile's pixel-shuffled token grid
  row-major) and a ``thumbnail`` view (the whole image as one more tile, last).
* Qwen2-VL dynamic resolution: a single view, the merged token grid over the whole image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..report import PruneReport
from .geometry import crop_geometry


@dataclass(frozen=True)
class View:
    """One picture of the image and the tokens drawn on it.

    Attributes:
        name: ``image``, ``base`` or ``high-res``.
        indices: ``(n,)`` token indices (into the report's ``tokens_before`` tokens).
        boxes: ``(n, 4)`` integer pixel boxes ``(x0, y0, x1, y1)`` in the original image.
        seen: ``(left, top, right, bottom)`` of the region the model sees; the rest is greyed.
        grid: ``(rows, cols)`` of this view's tokens (for InternVL tiles: over all tiles; ``indices``
            then run tile by tile).
    """

    name: str
    indices: np.ndarray
    boxes: np.ndarray
    seen: tuple[int, int, int, int]
    grid: tuple[int, int]


def image_processor_of(processor: Any) -> Any:
    """The image processor inside a multimodal processor (or the object itself)."""
    return getattr(processor, "image_processor", processor)


def _edge(size: Any, key: str) -> int:
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    if value is None:
        raise ValueError(f"image processor size {size!r} has no {key!r}")
    return int(value)


def pixel_boxes(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Float boxes rounded to integers and clipped to the image (neighbours share edges)."""
    width, height = image_size
    out = np.rint(boxes).astype(np.int64)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out


def grid_boxes(left: float, top: float, right: float, bottom: float, rows: int, cols: int) -> np.ndarray:
    """``(rows * cols, 4)`` float boxes tiling a rectangle, row-major."""
    xs, ys = np.linspace(left, right, cols + 1), np.linspace(top, bottom, rows + 1)
    x0, y0 = np.meshgrid(xs[:-1], ys[:-1])
    x1, y1 = np.meshgrid(xs[1:], ys[1:])
    return np.stack([x0, y0, x1, y1], axis=-1).reshape(rows * cols, 4)


def single_crop_layout(image_size: tuple[int, int], report: PruneReport, image_processor: Any) -> list[View]:
    """One view: the processor's crop cut into ``report.grid``."""
    if report.grid is None:
        raise ValueError(
            f"the {report.method} report has no token grid and the processor is not anyres: "
            "cannot tell which image region each token covers"
        )
    rows, cols = report.grid
    if rows * cols != report.tokens_before:
        raise ValueError(
            f"token grid {rows}x{cols} does not cover the {report.tokens_before} visual tokens of this image"
        )
    geometry = crop_geometry(image_size, image_processor)
    return [
        View(
            "image",
            np.arange(rows * cols),
            geometry.token_pixel_boxes(report.grid),
            geometry.crop_pixel_box(),
            (rows, cols),
        )
    ]


def unpadded_rows_cols(image_size: tuple[int, int], rows: int, cols: int) -> tuple[int, int, int, int]:
    """``(first_row, num_rows, first_col, num_cols)`` that ``unpad_image`` keeps of a ``rows x cols``
    token grid for an original image of ``(width, height)`` (same rounding as transformers)."""
    width, height = image_size
    if width / height > cols / rows:
        new_rows = int(round(height * (cols / width), 7))
        pad = (rows - new_rows) // 2
        return pad, rows - 2 * pad, 0, cols
    new_cols = int(round(width * (rows / height), 7))
    pad = (cols - new_cols) // 2
    return 0, rows, pad, cols - 2 * pad


def _anyres_crop_and_side(processor: Any) -> tuple[int, int]:
    """Crop size (pixels) and tokens per crop side of an anyres processor (LLaVA-NeXT gives
    ``patch_size``, LLaVA-OneVision ``num_image_tokens`` per crop)."""
    image_processor = image_processor_of(processor)
    crop_size, size = getattr(image_processor, "crop_size", None), image_processor.size
    for source, key in ((crop_size, "height"), (size, "height"), (size, "shortest_edge")):
        value = (
            None
            if source is None
            else (source.get(key) if isinstance(source, dict) else getattr(source, key, None))
        )
        if value:
            crop = int(value)
            break
    else:
        raise ValueError(f"cannot tell the anyres crop size from {size!r}")
    patch = getattr(processor, "patch_size", None)
    if patch:
        return crop, crop // int(patch)
    per_crop = getattr(processor, "num_image_tokens", None)
    if per_crop and math.isqrt(int(per_crop)) ** 2 == int(per_crop):
        return crop, math.isqrt(int(per_crop))
    raise ValueError(
        "the processor gives neither patch_size nor num_image_tokens: cannot lay out anyres tokens"
    )


def anyres_max(processor: Any) -> int | None:
    """N of LLaVA-OneVision's ``vision_aspect_ratio="anyres_max_N"`` (high-res grids with more than
    about N crops' worth of tokens are bilinearly downsampled), else None."""
    text = getattr(processor, "vision_aspect_ratio", None)
    if isinstance(text, str) and text.startswith("anyres_max_"):
        return int(text[len("anyres_max_") :])
    return None


def anyres_layout(image_size: tuple[int, int], processor: Any, tokens_before: int) -> list[View]:
    """Base and high-res views of a LLaVA-NeXT / LLaVA-OneVision image (see the module docstring)."""
    from transformers.image_processing_utils import select_best_resolution

    image_processor = image_processor_of(processor)
    width, height = image_size
    crop, side = _anyres_crop_and_side(processor)
    best_h, best_w = select_best_resolution((height, width), image_processor.image_grid_pinpoints)
    # the image is resized to fit best_w x best_h (aspect kept, ceil) and pasted in the middle
    scale_w, scale_h = best_w / width, best_h / height
    if scale_w < scale_h:
        new_w, new_h = best_w, min(math.ceil(height * scale_w), best_h)
    else:
        new_w, new_h = min(math.ceil(width * scale_h), best_w), best_h
    paste_x, paste_y = (best_w - new_w) // 2, (best_h - new_h) // 2
    rows, cols = (best_h // crop) * side, (best_w // crop) * side
    row0, n_rows, col0, n_cols = unpadded_rows_cols(image_size, rows, cols)
    cell = crop / side  # canvas pixels per token
    region = (col0 * cell, row0 * cell, (col0 + n_cols) * cell, (row0 + n_rows) * cell)
    limit = anyres_max(processor)
    if limit is not None:  # OneVision: the unpadded grid is resized over the same region
        ratio = math.sqrt(n_rows * n_cols / (limit * side * side))
        if ratio > 1.1:
            n_rows, n_cols = int(n_rows // ratio), int(n_cols // ratio)
    high = grid_boxes(*region, n_rows, n_cols)
    high[:, [0, 2]] = (high[:, [0, 2]] - paste_x) * (width / new_w)
    high[:, [1, 3]] = (high[:, [1, 3]] - paste_y) * (height / new_h)
    expected = side * side + n_rows * (n_cols + 1)
    if expected != tokens_before:
        raise ValueError(
            f"anyres layout gives {expected} tokens for a {width}x{height} image, the report has {tokens_before}"
        )
    base_idx = np.arange(side * side)
    high_idx = side * side + (np.arange(n_rows)[:, None] * (n_cols + 1) + np.arange(n_cols)[None, :]).reshape(
        -1
    )
    whole = (0, 0, width, height)
    return [
        View(
            "base",
            base_idx,
            pixel_boxes(grid_boxes(0, 0, width, height, side, side), image_size),
            whole,
            (side, side),
        ),
        View("high-res", high_idx, pixel_boxes(high, image_size), whole, (n_rows, n_cols)),
    ]


def tiled_layout(image_size: tuple[int, int], image_processor: Any, tokens_before: int) -> list[View]:
    """Tiles and thumbnail views of an InternVL image (see the module docstring)."""
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

    width, height = image_size
    tile_h, tile_w = _edge(image_processor.size, "height"), _edge(image_processor.size, "width")
    cols, rows = get_optimal_tiled_canvas(
        (height, width), (tile_h, tile_w), int(image_processor.min_patches), int(image_processor.max_patches)
    )
    tiles = cols * rows + (1 if cols * rows > 1 else 0)  # the thumbnail comes with several tiles
    per_tile = tokens_before // tiles
    side = math.isqrt(per_tile)
    if cols * rows == 1 or side * side * tiles != tokens_before:
        raise ValueError(
            f"tiled layout gives {cols * rows} tiles + thumbnail for a {width}x{height} image, which does "
            f"not split the report's {tokens_before} tokens into square tile grids"
        )
    boxes, indices = [], []
    tile_w_px, tile_h_px = width / cols, height / rows
    for t in range(cols * rows):
        r, c = divmod(t, cols)
        boxes.append(
            grid_boxes(c * tile_w_px, r * tile_h_px, (c + 1) * tile_w_px, (r + 1) * tile_h_px, side, side)
        )
        indices.append(t * per_tile + np.arange(per_tile))
    whole = (0, 0, width, height)
    thumb = cols * rows * per_tile + np.arange(per_tile)
    return [
        View(
            "tiles",
            np.concatenate(indices),
            pixel_boxes(np.concatenate(boxes), image_size),
            whole,
            (rows * side, cols * side),
        ),
        View(
            "thumbnail",
            thumb,
            pixel_boxes(grid_boxes(0, 0, width, height, side, side), image_size),
            whole,
            (side, side),
        ),
    ]


def token_layout(image_size: tuple[int, int], report: PruneReport, processor: Any) -> list[View]:
    """The views of ``report``'s tokens on an original image of ``(width, height)``."""
    if image_size[0] <= 0 or image_size[1] <= 0:
        raise ValueError(f"image size must be positive, got {image_size}")
    image_processor = image_processor_of(processor)
    if getattr(image_processor, "image_grid_pinpoints", None) and report.grid is None:
        return anyres_layout(image_size, processor, report.tokens_before)
    if getattr(image_processor, "crop_to_patches", False) and report.grid is None:
        return tiled_layout(image_size, image_processor, report.tokens_before)
    return single_crop_layout(image_size, report, image_processor)
