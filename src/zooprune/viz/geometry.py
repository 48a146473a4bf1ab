"""Where each visual token came from: token grid cells mapped back to the original image.

LLaVA-1.5's CLIP image processor resizes the shortest edge to ``size["shortest_edge"]`` (the long
edge to ``int(short * long / short_in)``), then center-crops ``crop_size``; the vision tower cuts
the crop into a ``rows x cols`` patch grid, one visual token per patch in row-major order. This
module inverts that: for an original image of size ``(W, H)`` it gives each token's box in the
original image's pixel coordinates (parts of the image outside the crop are never seen).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def _field(size: Any, key: str) -> int | None:
    """``size[key]`` for a dict or a transformers ``SizeDict`` (attribute access), else None."""
    if size is None:
        return None
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return None if value is None else int(value)


@dataclass(frozen=True)
class CropGeometry:
    """The processor's view of one image: the crop box in original pixel coordinates.

    Attributes:
        image_size: original ``(width, height)``.
        box: ``(left, top, right, bottom)`` of the region the model sees, in original pixels
            (floats; may reach past the image when the processor pads instead of cropping).
    """

    image_size: tuple[int, int]
    box: tuple[float, float, float, float]

    def token_boxes(self, grid: tuple[int, int]) -> np.ndarray:
        """``(rows * cols, 4)`` float boxes ``(x0, y0, x1, y1)``, row-major like the tokens."""
        rows, cols = grid
        left, top, right, bottom = self.box
        xs = np.linspace(left, right, cols + 1)
        ys = np.linspace(top, bottom, rows + 1)
        x0, y0 = np.meshgrid(xs[:-1], ys[:-1])
        x1, y1 = np.meshgrid(xs[1:], ys[1:])
        return np.stack([x0, y0, x1, y1], axis=-1).reshape(rows * cols, 4)

    def token_pixel_boxes(self, grid: tuple[int, int]) -> np.ndarray:
        """Integer boxes clipped to the image; neighbouring boxes share edges (no gaps, no overlap)."""
        width, height = self.image_size
        boxes = np.rint(self.token_boxes(grid)).astype(np.int64)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        return boxes

    def crop_pixel_box(self) -> tuple[int, int, int, int]:
        """The crop box rounded and clipped to the image."""
        width, height = self.image_size
        left, top, right, bottom = (int(round(v)) for v in self.box)
        return max(0, left), max(0, top), min(width, right), min(height, bottom)


def crop_geometry(image_size: tuple[int, int], image_processor: Any) -> CropGeometry:
    """The region of an original ``(width, height)`` image that ``image_processor`` keeps.

    Follows transformers' CLIP-style processors: optional resize (``shortest_edge``, or an exact
    ``height`` x ``width``), then optional center crop of ``crop_size`` with the crop offset
    ``(resized - crop) // 2`` as in ``transformers.image_transforms.center_crop``. Qwen2-VL-style
    processors (``merge_size``) resize the whole image to the token grid: nothing is cut off.
    """
    width, height = image_size
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {image_size}")
    if getattr(image_processor, "merge_size", None) is not None:
        # Qwen2-VL style dynamic resolution: the whole image resized to a multiple of
        # patch x merge on each side, no crop; the token grid tiles all of it
        return CropGeometry(image_size=(width, height), box=(0.0, 0.0, float(width), float(height)))
    size = getattr(image_processor, "size", None)
    do_resize = bool(getattr(image_processor, "do_resize", True)) and size is not None
    new_w, new_h = float(width), float(height)
    if do_resize:
        short_edge = _field(size, "shortest_edge")
        if short_edge is not None and _field(size, "longest_edge") is None:
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = short_edge, int(short_edge * long / short)
            new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
        elif _field(size, "height") is not None and _field(size, "width") is not None:
            new_w, new_h = _field(size, "width"), _field(size, "height")
        else:
            raise ValueError(
                f"unsupported image processor size {size!r}: token overlays know shortest_edge "
                "(CLIP-style resize + center crop) and fixed height x width resizes"
            )
    scale_x, scale_y = width / new_w, height / new_h
    left, top, right, bottom = 0.0, 0.0, float(new_w), float(new_h)
    crop = getattr(image_processor, "crop_size", None)
    if bool(getattr(image_processor, "do_center_crop", False)) and crop is not None:
        crop_h, crop_w = _field(crop, "height"), _field(crop, "width")
        if crop_h is None or crop_w is None:
            raise ValueError(f"unsupported crop_size {crop!r}: expected height and width")
        top = float((int(new_h) - crop_h) // 2)
        left = float((int(new_w) - crop_w) // 2)
        right, bottom = left + crop_w, top + crop_h
    return CropGeometry(
        image_size=(width, height),
        box=(left * scale_x, top * scale_y, right * scale_x, bottom * scale_y),
    )
