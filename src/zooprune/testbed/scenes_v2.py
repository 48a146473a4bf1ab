"""Testbed v2 scenes: content in every region of the image (issue 13, item 4).

In v1, 87 % of the patches are one striped background that no training objective needs, and a
projector's response to such never-needed tokens decides how sensitivity-based pruning ranks
(docs: testbed-findings.md). A v2 scene has no "empty" background:

- The background is a guillotine partition into 3-5 rectangular *regions* (the largest region
  is always split next, so no region covers more than about half of the image). Each region
  has a colour (names disjoint from the object colours), a texture (plain, stripes, dots, grid,
  checks, waves) at a ``fine`` or ``coarse`` scale, and optionally *specks*: clutter marks of
  1-6 px (several scales). Region questions ask about colour and pattern at a place, scene
  questions about the whole background, so the model must encode every region.
- Items on top, drawn exactly as v1 draws them (:func:`scenes.paint_items`): 3-6 shapes, an
  optional digit tile, and the never-asked checker / caption decoys.

Every random draw takes an explicit ``numpy.random.Generator``; the speck positions come from
the scene's own ``noise_seed``. Labels per patch: the item id map (as v1) and a region id map.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from .scenes import (
    GRID,
    IMAGE_SIZE,
    PATCH,
    Scene,
    draw_items,
    paint_items,
)

REGION_COLOURS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "brown": (125, 85, 50),
    "teal": (40, 125, 125),
    "olive": (115, 120, 45),
    "navy": (35, 45, 105),
    "pink": (215, 150, 170),
    "tan": (195, 170, 125),
    "black": (30, 30, 30),
}
TEXTURES: tuple[str, ...] = ("plain", "stripes", "dots", "grid", "checks", "waves")
SCALES: dict[str, tuple[int, ...]] = {"fine": (3, 4, 5), "coarse": (8, 10, 12)}
#: 3x3 places of the image, row-major; a place is a third of the image per side.
PLACES: tuple[str, ...] = (
    "top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right",
)  # fmt: skip
SPLIT_STEP = 8  # region borders lie on multiples of 8 px (not of the 16-px patch)
#: patch categories used by the statistics (``patch_categories``).
CATEGORIES: tuple[str, ...] = ("region", "shape", "tile", "checker", "caption")


def _partition(rng: np.random.Generator, n: int) -> list[list[int]]:
    """``n`` rectangles [x0, y0, x1, y1] tiling the image: always split the largest one."""
    rects = [[0, 0, IMAGE_SIZE, IMAGE_SIZE]]
    while len(rects) < n:
        areas = [(r[2] - r[0]) * (r[3] - r[1]) for r in rects]
        x0, y0, x1, y1 = rects.pop(int(np.argmax(areas)))
        w, h = x1 - x0, y1 - y0
        vertical = w > h if w != h else bool(rng.random() < 0.5)
        lo, hi = (x0, x1) if vertical else (y0, y1)
        span = hi - lo
        cut = lo + SPLIT_STEP * int(
            rng.integers(round(0.3 * span / SPLIT_STEP), round(0.7 * span / SPLIT_STEP) + 1)
        )
        if vertical:
            rects += [[x0, y0, cut, y1], [cut, y0, x1, y1]]
        else:
            rects += [[x0, y0, x1, cut], [x0, cut, x1, y1]]
    return rects


def make_scene_v2(rng: np.random.Generator) -> Scene:
    """Draw a v2 scene layout: ``regions`` (background) and ``items`` (as in v1)."""
    n_regions = int(rng.integers(3, 6))
    rects = _partition(rng, n_regions)
    colour_names = list(REGION_COLOURS)
    colours = rng.choice(len(colour_names), size=n_regions, replace=False)
    regions = []
    for rect, ci in zip(rects, colours):
        texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
        scale = "fine" if rng.random() < 0.5 else "coarse"
        periods = SCALES[scale]
        regions.append(
            {
                "box": [int(v) for v in rect],
                "colour": colour_names[int(ci)],
                "texture": texture,
                "scale": scale,
                "period": int(periods[int(rng.integers(len(periods)))]),
                "specks": bool(rng.random() < 0.5),
            }
        )
    items = draw_items(rng)  # as v1 (same distributions and draws)
    return {"version": 2, "regions": regions, "noise_seed": int(rng.integers(2**31)), "items": items}


def region_map(scene: Scene) -> np.ndarray:
    """Region index per pixel, int16 [224, 224] (from the description alone)."""
    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.int16)
    for i, reg in enumerate(scene["regions"]):
        x0, y0, x1, y1 = reg["box"]
        out[y0:y1, x0:x1] = i
    return out


def _texture(reg: dict[str, Any], h: int, w: int) -> np.ndarray:
    """Bool [h, w]: where the region's second (contrast) colour goes."""
    p = reg["period"]
    yy, xx = np.mgrid[0:h, 0:w]
    t = reg["texture"]
    if t == "plain":
        return np.zeros((h, w), dtype=bool)
    if t == "stripes":
        return (yy // p) % 2 == 1
    if t == "dots":
        return ((yy % (2 * p)) - p) ** 2 + ((xx % (2 * p)) - p) ** 2 <= (0.6 * p) ** 2
    if t == "grid":
        return (yy % (2 * p) < max(1, p // 3)) | (xx % (2 * p) < max(1, p // 3))
    if t == "checks":
        return ((yy // p) + (xx // p)) % 2 == 1
    return np.sin(2 * np.pi * (xx / (3 * p) + 0.25 * np.sin(2 * np.pi * yy / (4 * p)))) > 0.3  # waves


def _contrast(rgb: tuple[int, int, int]) -> np.ndarray:
    base = np.array(rgb, dtype=np.float32)
    return np.clip(base * 0.55, 0, 255) if base.mean() > 90 else np.clip(base + 90, 0, 255)


def render_scene_v2(scene: Scene) -> tuple[Image.Image, np.ndarray]:
    """Render a v2 scene: the RGB image (224x224) and the item-id map (as v1's ``render_scene``)."""
    rng = np.random.default_rng(scene["noise_seed"])
    arr = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    for reg in scene["regions"]:
        x0, y0, x1, y1 = reg["box"]
        h, w = y1 - y0, x1 - x0
        base = np.array(REGION_COLOURS[reg["colour"]], dtype=np.float32)
        sel = _texture(reg, h, w)
        arr[y0:y1, x0:x1] = np.where(sel[..., None], _contrast(REGION_COLOURS[reg["colour"]]), base)
    arr += rng.normal(0, 6, arr.shape)
    for reg in scene["regions"]:  # clutter: specks of 1-6 px in a light or dark shade
        if not reg["specks"]:
            continue
        x0, y0, x1, y1 = reg["box"]
        n = max(3, (x1 - x0) * (y1 - y0) // 700)
        shade = 235.0 if np.mean(REGION_COLOURS[reg["colour"]]) < 150 else 20.0
        for _ in range(n):
            s = int(rng.integers(1, 7))
            sx = int(rng.integers(x0, max(x0 + 1, x1 - s)))
            sy = int(rng.integers(y0, max(y0 + 1, y1 - s)))
            arr[sy : sy + s, sx : sx + s] = shade
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return paint_items(img, scene["items"])


def place_of(x: float, y: float) -> str:
    """The 3x3 place name of pixel (x, y)."""
    third = IMAGE_SIZE / 3
    return PLACES[3 * min(2, int(y // third)) + min(2, int(x // third))]


def place_region(scene: Scene, place: str, min_share: float = 0.75) -> int | None:
    """The region covering at least ``min_share`` of ``place``'s pixels, or None (ambiguous)."""
    k = PLACES.index(place)
    r, c = divmod(k, 3)
    third = IMAGE_SIZE / 3
    ys = slice(round(r * third), round((r + 1) * third))
    xs = slice(round(c * third), round((c + 1) * third))
    block = region_map(scene)[ys, xs]
    counts = np.bincount(block.ravel(), minlength=len(scene["regions"]))
    best = int(counts.argmax())
    return best if counts[best] >= min_share * block.size else None


def texture_areas(scene: Scene) -> dict[str, int]:
    """Background pixels per texture (regions only; items ignored)."""
    out: dict[str, int] = {}
    for reg in scene["regions"]:
        x0, y0, x1, y1 = reg["box"]
        out[reg["texture"]] = out.get(reg["texture"], 0) + (x1 - x0) * (y1 - y0)
    return out


def patch_regions(scene: Scene) -> np.ndarray:
    """Region index of each patch (majority of its pixels), int64 [196]."""
    rm = region_map(scene)
    blocks = rm.reshape(GRID, PATCH, GRID, PATCH).transpose(0, 2, 1, 3).reshape(GRID * GRID, -1)
    n = len(scene["regions"])
    return np.stack([(blocks == k).sum(1) for k in range(n)], 1).argmax(1).astype(np.int64)
