"""Token overlays: kept patches as they are, dropped patches dimmed, unseen margins greyed.

``overlay(image, report, processor)`` returns a new PIL image. For single-crop models
(LLaVA-1.5) it is the size of ``image``; for anyres models (LLaVA-NeXT) it shows the base view
and the high-res view side by side (each family's adapter lays its tokens out, see
:mod:`zooprune.viz.layout`). In each view:

* pixels of kept tokens are the original pixels, unchanged;
* pixels of dropped tokens are ``round(pixel * dim)`` (darkened);
* pixels outside the processor's crop (never seen by the model) are blended towards grey.

Only numpy and PIL are imported here, so ``import zooprune.viz`` stays light.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ..geometry import View
from ..report import PruneReport
from .layout import token_layout

__all__ = ["heatmap", "kept_mask", "overlay", "views_side_by_side"]

#: Grey the unseen margins are blended towards, and how far.
UNSEEN_GREY = 200
UNSEEN_BLEND = 0.6
#: White gap (pixels) between views.
VIEW_GAP = 8


def kept_mask(report: PruneReport) -> np.ndarray:
    """``(N,)`` bool: True for the tokens the method kept."""
    mask = np.zeros(report.tokens_before, dtype=bool)
    indices = np.asarray(report.kept_indices.tolist(), dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= report.tokens_before):
        raise ValueError(f"kept index out of range for {report.tokens_before} tokens")
    mask[indices] = True
    return mask


def grey_unseen(pixels: np.ndarray, seen: tuple[int, int, int, int]) -> np.ndarray:
    """Float ``(H, W, 3)`` copy of ``pixels`` with everything outside ``seen`` blended to grey."""
    out = pixels.astype(np.float32)
    left, top, right, bottom = seen
    outside = np.ones(out.shape[:2], dtype=bool)
    outside[top:bottom, left:right] = False
    out[outside] = out[outside] * (1 - UNSEEN_BLEND) + UNSEEN_GREY * UNSEEN_BLEND
    return out


def views_side_by_side(pictures: list[np.ndarray]) -> Image.Image:
    """Float ``(H, W, 3)`` pictures (same height) joined left to right with white gaps."""
    height = pictures[0].shape[0]
    gap = np.full((height, VIEW_GAP, 3), 255.0, dtype=np.float32)
    parts: list[np.ndarray] = []
    for i, picture in enumerate(pictures):
        parts += [gap, picture] if i else [picture]
    return Image.fromarray(np.rint(np.concatenate(parts, axis=1)).clip(0, 255).astype(np.uint8))


def draw_views(
    image: Image.Image, report: PruneReport, processor: Any, paint: Any
) -> tuple[Image.Image, list[View]]:
    """Each view of ``report`` painted by ``paint(out, pixels, view, position, box)``, joined."""
    rgb = image.convert("RGB")
    views = token_layout(rgb.size, report, processor)
    pixels = np.asarray(rgb)
    pictures = []
    for view in views:
        out = grey_unseen(pixels, view.seen)
        for position, box in enumerate(view.boxes):
            paint(out, pixels, view, position, box)
        pictures.append(out)
    return views_side_by_side(pictures), views


def overlay(image: Image.Image, report: PruneReport, processor: Any, dim: float = 0.25) -> Image.Image:
    """``image`` with the patches of dropped tokens darkened to ``dim`` x their brightness.

    Args:
        image: the original image given to the model (any size; converted to RGB).
        report: the image's :class:`~zooprune.report.PruneReport` (``kept_indices``, ``grid``).
        processor: the model's processor (or its image processor): its resize, crop and anyres
            settings decide which image region each token covers.
        dim: brightness factor of dropped patches, in [0, 1].
    """
    if not 0.0 <= dim <= 1.0:
        raise ValueError(f"dim must be in [0, 1], got {dim}")
    kept = kept_mask(report)

    def paint(out: np.ndarray, pixels: np.ndarray, view: View, position: int, box: np.ndarray) -> None:
        x0, y0, x1, y1 = box
        factor = 1.0 if kept[view.indices[position]] else dim
        out[y0:y1, x0:x1] = pixels[y0:y1, x0:x1].astype(np.float32) * factor

    return draw_views(image, report, processor, paint)[0]


def heatmap(
    image: Image.Image, report: PruneReport, processor: Any, cmap: str = "inferno", alpha: float = 0.6
) -> Image.Image:
    """``image`` with each token's patch tinted by its score (``report.scores``), min-max normalised
    over the tokens that cover a region. Uses a matplotlib colormap (imported here, on call)."""
    from matplotlib import colormaps

    if report.scores is None:
        raise ValueError(f"method {report.method!r} reports no per-token scores to draw as a heatmap")
    scores = np.asarray(report.scores.tolist(), dtype=np.float32)
    views = token_layout(image.size, report, processor)
    drawn = np.concatenate([view.indices for view in views])
    lo, hi = float(scores[drawn].min()), float(scores[drawn].max())
    norm = (scores - lo) / (hi - lo) if hi > lo else np.zeros_like(scores)
    colors = colormaps[cmap](norm.clip(0, 1))[:, :3] * 255.0

    def paint(out: np.ndarray, pixels: np.ndarray, view: View, position: int, box: np.ndarray) -> None:
        x0, y0, x1, y1 = box
        out[y0:y1, x0:x1] = pixels[y0:y1, x0:x1] * (1 - alpha) + colors[view.indices[position]] * alpha

    return draw_views(image, report, processor, paint)[0]
