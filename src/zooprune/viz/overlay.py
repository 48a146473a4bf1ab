"""Token overlays: kept patches as they are, dropped patches dimmed, unseen margins greyed.

``overlay(image, report, processor)`` returns a new PIL image the size of ``image``:

* pixels of kept tokens are the original pixels, unchanged;
* pixels of dropped tokens are ``round(pixel * dim)`` (darkened);
* pixels outside the processor's crop (never seen by the model) are blended towards grey.

Only numpy and PIL are imported here, so ``import zooprune.viz`` stays light.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ..report import PruneReport
from .geometry import CropGeometry, crop_geometry

#: Grey the unseen margins are blended towards, and how far.
UNSEEN_GREY = 200
UNSEEN_BLEND = 0.6


def image_processor_of(processor: Any) -> Any:
    """The image processor inside a multimodal processor (or the object itself)."""
    return getattr(processor, "image_processor", processor)


def report_geometry(
    image: Image.Image, report: PruneReport, processor: Any
) -> tuple[CropGeometry, np.ndarray]:
    """The crop geometry of ``image`` and each token's integer pixel box ``(N, 4)``."""
    if report.grid is None:
        raise ValueError(
            f"the {report.method} report has no token grid: overlays need a rows x cols token grid "
            "(LLaVA-1.5-style single-crop models)"
        )
    rows, cols = report.grid
    if rows * cols != report.tokens_before:
        raise ValueError(
            f"token grid {rows}x{cols} does not cover the {report.tokens_before} visual tokens of this "
            "image (multi-crop / dynamic-resolution layouts are not mapped yet)"
        )
    geometry = crop_geometry(image.size, image_processor_of(processor))
    return geometry, geometry.token_pixel_boxes(report.grid)


def kept_mask(report: PruneReport) -> np.ndarray:
    """``(N,)`` bool: True for the tokens the method kept."""
    mask = np.zeros(report.tokens_before, dtype=bool)
    indices = np.asarray(report.kept_indices.tolist(), dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= report.tokens_before):
        raise ValueError(f"kept index out of range for {report.tokens_before} tokens")
    mask[indices] = True
    return mask


def grey_unseen(pixels: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """Float ``(H, W, 3)`` copy of ``pixels`` with everything outside the crop blended to grey."""
    out = pixels.astype(np.float32)
    left, top, right, bottom = geometry.crop_pixel_box()
    outside = np.ones(out.shape[:2], dtype=bool)
    outside[top:bottom, left:right] = False
    out[outside] = out[outside] * (1 - UNSEEN_BLEND) + UNSEEN_GREY * UNSEEN_BLEND
    return out


def overlay(image: Image.Image, report: PruneReport, processor: Any, dim: float = 0.25) -> Image.Image:
    """``image`` with the patches of dropped tokens darkened to ``dim`` x their brightness.

    Args:
        image: the original image given to the model (any size; converted to RGB).
        report: the image's :class:`~zooprune.report.PruneReport` (``kept_indices``, ``grid``).
        processor: the model's processor (or its image processor): its resize and center crop
            decide which image region each token covers.
        dim: brightness factor of dropped patches, in [0, 1].
    """
    if not 0.0 <= dim <= 1.0:
        raise ValueError(f"dim must be in [0, 1], got {dim}")
    rgb = image.convert("RGB")
    geometry, boxes = report_geometry(rgb, report, processor)
    pixels = np.asarray(rgb)
    out = grey_unseen(pixels, geometry)
    for (x0, y0, x1, y1), kept in zip(boxes, kept_mask(report)):
        if kept:
            out[y0:y1, x0:x1] = pixels[y0:y1, x0:x1]
        else:
            out[y0:y1, x0:x1] = pixels[y0:y1, x0:x1].astype(np.float32) * dim
    return Image.fromarray(np.rint(out).clip(0, 255).astype(np.uint8))


def score_grid(report: PruneReport) -> np.ndarray:
    """``(rows, cols)`` float scores of ``report`` (its method must report per-token scores)."""
    if report.scores is None:
        raise ValueError(f"method {report.method!r} reports no per-token scores to draw as a heatmap")
    if report.grid is None:
        raise ValueError(f"the {report.method} report has no token grid")
    return np.asarray(report.scores.tolist(), dtype=np.float32).reshape(report.grid)


def heatmap(
    image: Image.Image, report: PruneReport, processor: Any, cmap: str = "inferno", alpha: float = 0.6
) -> Image.Image:
    """``image`` with each token's patch tinted by its min-max normalised score (``report.scores``).

    Uses a matplotlib colormap (matplotlib is imported here, on call).
    """
    from matplotlib import colormaps

    rgb = image.convert("RGB")
    geometry, boxes = report_geometry(rgb, report, processor)
    scores = score_grid(report).reshape(-1)
    span = float(scores.max() - scores.min())
    norm = (scores - scores.min()) / span if span > 0 else np.zeros_like(scores)
    colors = colormaps[cmap](norm)[:, :3] * 255.0
    pixels = np.asarray(rgb)
    out = grey_unseen(pixels, geometry)
    for (x0, y0, x1, y1), color in zip(boxes, colors):
        out[y0:y1, x0:x1] = pixels[y0:y1, x0:x1] * (1 - alpha) + color * alpha
    return Image.fromarray(np.rint(out).clip(0, 255).astype(np.uint8))
