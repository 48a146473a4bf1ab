"""Image geometry shared by the family adapters (which lay out their tokens) and ``zooprune.viz``.

A token layout says which region of the original image each visual token covers, as one or more
:class:`View` s. Each family adapter's ``token_layout`` builds its views from the helpers here;
``zooprune.viz`` draws them. This module imports neither the adapters nor ``viz`` (numpy only).

CLIP-style processors (LLaVA-1.5, Gemma 3, InternVL's single tile) resize the shortest edge to
``size["shortest_edge"]`` (the long edge to ``int(short * long / short_in)``) or to an exact
``height x width``, then may center-crop ``crop_size``; the vision tower cuts the crop into a
``rows x cols`` patch grid, one token per patch in row-major order. :func:`crop_geometry` inverts
that: for an original ``(W, H)`` image it gives the crop box in original pixels (parts outside it
are never seen), and :meth:`CropGeometry.token_pixel_boxes` each token's box.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .report import PruneReport

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class View:
    """One picture of the image and the tokens drawn on it.

    Attributes:
        name: ``image``, ``base`` / ``high-res`` (anyres) or ``tiles`` / ``thumbnail`` (tiled).
        indices: ``(n,)`` token indices (into the report's ``tokens_before`` tokens).
        boxes: ``(n, 4)`` integer pixel boxes ``(x0, y0, x1, y1)`` in the original image.
        seen: ``(left, top, right, bottom)`` of the region the model sees; the rest is greyed.
        grid: ``(rows, cols)`` of this view's tokens (for InternVL tiles: over all tiles; ``indices``
            then run tile by tile).
    """

    name: str
    indices: np.ndarray
    boxes: np.ndarray
    seen: Box
    grid: tuple[int, int]


def image_processor_of(processor: Any) -> Any:
    """The image processor inside a multimodal processor (or the object itself)."""
    return getattr(processor, "image_processor", processor)


def size_field(size: Any, key: str) -> int | None:
    """``size[key]`` for a dict or a transformers ``SizeDict`` (attribute access), else None."""
    if size is None:
        return None
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return None if value is None else int(value)


def grid_boxes(left: float, top: float, right: float, bottom: float, rows: int, cols: int) -> np.ndarray:
    """``(rows * cols, 4)`` float boxes ``(x0, y0, x1, y1)`` tiling a rectangle, row-major."""
    xs, ys = np.linspace(left, right, cols + 1), np.linspace(top, bottom, rows + 1)
    x0, y0 = np.meshgrid(xs[:-1], ys[:-1])
    x1, y1 = np.meshgrid(xs[1:], ys[1:])
    return np.stack([x0, y0, x1, y1], axis=-1).reshape(rows * cols, 4)


def pixel_boxes(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """``(n, 4)`` float boxes rounded to integers and clipped to the ``(width, height)`` image
    (neighbouring boxes share edges: no gaps, no overlap)."""
    width, height = image_size
    out = np.rint(boxes).astype(np.int64)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out


def seen_box(region: tuple[float, float, float, float], image_size: tuple[int, int]) -> Box:
    """A float ``(left, top, right, bottom)`` region rounded and clipped to the ``(width, height)`` image."""
    width, height = image_size
    left, top, right, bottom = (int(round(v)) for v in region)
    return max(0, left), max(0, top), min(width, right), min(height, bottom)


def report_grid(report: PruneReport) -> tuple[int, int]:
    """``report.grid`` checked against its token count (clear errors when it cannot be drawn)."""
    if report.grid is None:
        raise ValueError(
            f"the {report.method} report has no token grid: cannot tell which image region each token covers"
        )
    rows, cols = report.grid
    if rows * cols != report.tokens_before:
        raise ValueError(
            f"token grid {rows}x{cols} does not cover the {report.tokens_before} visual tokens of this image"
        )
    return rows, cols


def grid_view(
    name: str, image_size: tuple[int, int], grid: tuple[int, int], region: tuple[float, float, float, float]
) -> View:
    """A view of ``rows x cols`` tokens (indices ``0..rows*cols-1``, row-major) tiling the float
    ``region`` of the image; the model sees the region clipped to the image."""
    rows, cols = grid
    boxes = pixel_boxes(grid_boxes(*region, rows, cols), image_size)
    return View(name, np.arange(rows * cols), boxes, seen_box(region, image_size), grid)


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
        return grid_boxes(*self.box, *grid)

    def token_pixel_boxes(self, grid: tuple[int, int]) -> np.ndarray:
        """``(rows * cols, 4)`` integer boxes clipped to the image (see :func:`pixel_boxes`)."""
        return pixel_boxes(self.token_boxes(grid), self.image_size)

    def crop_pixel_box(self) -> Box:
        """The crop box rounded and clipped to the image."""
        return seen_box(self.box, self.image_size)


def crop_geometry(image_size: tuple[int, int], image_processor: Any) -> CropGeometry:
    """The region of an original ``(width, height)`` image that a CLIP-style ``image_processor`` keeps.

    Optional resize (``shortest_edge``, or an exact ``height`` x ``width``), then optional center
    crop of ``crop_size`` with the offset ``(resized - crop) // 2`` as in
    ``transformers.image_transforms.center_crop``.
    """
    width, height = image_size
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {image_size}")
    size = getattr(image_processor, "size", None)
    do_resize = bool(getattr(image_processor, "do_resize", True)) and size is not None
    new_w, new_h = float(width), float(height)
    if do_resize:
        short_edge = size_field(size, "shortest_edge")
        fixed_h, fixed_w = size_field(size, "height"), size_field(size, "width")
        if short_edge is not None and size_field(size, "longest_edge") is None:
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = short_edge, int(short_edge * long / short)
            new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
        elif fixed_h is not None and fixed_w is not None:
            new_w, new_h = fixed_w, fixed_h
        else:
            raise ValueError(
                f"unsupported image processor size {size!r}: token overlays know shortest_edge "
                "(CLIP-style resize + center crop) and fixed height x width resizes"
            )
    scale_x, scale_y = width / new_w, height / new_h
    left, top, right, bottom = 0.0, 0.0, float(new_w), float(new_h)
    crop = getattr(image_processor, "crop_size", None)
    if bool(getattr(image_processor, "do_center_crop", False)) and crop is not None:
        crop_h, crop_w = size_field(crop, "height"), size_field(crop, "width")
        if crop_h is None or crop_w is None:
            raise ValueError(f"unsupported crop_size {crop!r}: expected height and width")
        top = float((int(new_h) - crop_h) // 2)
        left = float((int(new_w) - crop_w) // 2)
        right, bottom = left + crop_w, top + crop_h
    return CropGeometry(
        image_size=(width, height),
        box=(left * scale_x, top * scale_y, right * scale_x, bottom * scale_y),
    )


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
