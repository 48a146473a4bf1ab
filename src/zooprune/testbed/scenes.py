"""Procedural scenes: layout (a JSON-able description) and rendering (a 224x224 RGB image).

A scene is a 7x7 grid of 32-px cells. Each occupied cell holds one item:

- ``shape``: circle / square / triangle / diamond in one of six colours, small (14 px) or
  large (26 px). No two shapes share a (colour, shape) pair, so "the red circle" is unique.
- ``tile``: a white tile with one black digit (the "reading" target), at most one per scene.
- decoys no question ever asks about: ``checker`` (a saturated neon checkerboard texture)
  and ``caption`` (black glyphs on a neon bar). They are the most salient things in the
  image, so "keep the highest-norm tokens" is not an oracle.

The background is a muted random colour with pixel noise and faint stripes. Every random
draw takes an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .font import GLYPH_CHARS, glyph_mask, text_mask

IMAGE_SIZE = 224
PATCH = 16
GRID = IMAGE_SIZE // PATCH  # 14 patches per side
CELL = 32
CELLS = IMAGE_SIZE // CELL  # 7 cells per side

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 215),
    "yellow": (230, 200, 40),
    "purple": (140, 60, 180),
    "orange": (240, 130, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: dict[str, int] = {"small": 14, "large": 26}
DIGITS: tuple[str, ...] = ("2", "3", "4", "5", "6", "7", "8", "9")
NEON: tuple[tuple[int, int, int], ...] = ((255, 0, 255), (0, 255, 255), (180, 255, 0), (255, 255, 255))
CAPTION_CHARS: tuple[str, ...] = tuple(c for c in GLYPH_CHARS if c.isalpha())

# (colour, shape) pairs drawn three times as often: the "popular" objects of POPE-style negatives.
POPULAR: tuple[tuple[str, str], ...] = (
    ("red", "circle"),
    ("blue", "square"),
    ("green", "triangle"),
    ("yellow", "circle"),
    ("orange", "square"),
    ("purple", "diamond"),
)

KINDS: tuple[str, ...] = ("background", "shape", "tile", "checker", "caption")

Scene = dict[str, Any]


def _combo_weights() -> tuple[list[tuple[str, str]], np.ndarray]:
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    w = np.array([3.0 if cs in POPULAR else 1.0 for cs in combos])
    return combos, w / w.sum()


def draw_items(rng: np.random.Generator) -> list[dict[str, Any]]:
    """Draw a scene's items (3-6 shapes, a digit tile, checker and caption decoys) on the 7x7 cell
    grid; v1 and v2 scenes share this (same draws in the same order)."""
    n_shapes = int(rng.integers(3, 7))
    has_tile = bool(rng.random() < 0.8)
    n_checker = int(rng.integers(1, 3))
    has_caption = bool(rng.random() < 0.8)
    n_items = n_shapes + int(has_tile) + n_checker + int(has_caption)
    cells = rng.choice(CELLS * CELLS, size=n_items, replace=False)
    combos, weights = _combo_weights()
    picked = rng.choice(len(combos), size=n_shapes, replace=False, p=weights)
    items: list[dict[str, Any]] = []

    def place(idx: int, w: int, h: int) -> dict[str, Any]:
        r, c = divmod(int(cells[idx]), CELLS)
        jx = int(rng.integers(0, CELL - w + 1))
        jy = int(rng.integers(0, CELL - h + 1))
        x0, y0 = c * CELL + jx, r * CELL + jy
        return {"row": r, "col": c, "box": [x0, y0, x0 + w, y0 + h]}

    k = 0
    for p in picked:
        colour, shape = combos[int(p)]
        size = "small" if rng.random() < 0.5 else "large"
        px = SIZES[size]
        items.append({"kind": "shape", "colour": colour, "shape": shape, "size": size, **place(k, px, px)})
        k += 1
    if has_tile:
        items.append({"kind": "tile", "text": str(rng.choice(DIGITS)), **place(k, 18, 22)})
        k += 1
    for _ in range(n_checker):
        side = int(rng.integers(18, 29))
        neon = [int(rng.integers(len(NEON))), int(rng.integers(len(NEON) - 1))]
        items.append(
            {"kind": "checker", "neon": neon, "period": int(rng.integers(2, 5)), **place(k, side, side)}
        )
        k += 1
    if has_caption:
        text = "".join(str(rng.choice(CAPTION_CHARS)) for _ in range(2))
        items.append(
            {"kind": "caption", "text": text, "neon": int(rng.integers(len(NEON))), **place(k, 26, 18)}
        )
        k += 1
    return items


def make_scene(rng: np.random.Generator) -> Scene:
    """Draw a scene layout: a dict with ``background`` and a list of ``items``."""
    items = draw_items(rng)
    bg = [int(v) for v in rng.integers(70, 170, size=3)]
    return {
        "background": bg,
        "stripe_period": int(rng.integers(6, 20)),
        "noise_seed": int(rng.integers(2**31)),
        "items": items,
    }


def shapes_of(scene: Scene) -> list[dict[str, Any]]:
    """The ``shape`` items of a scene (the only items that questions count or compare)."""
    return [it for it in scene["items"] if it["kind"] == "shape"]


def _shape_polygon(shape: str, box: list[int]) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2
    if shape == "triangle":
        return [(cx, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)]
    return [(cx, y0), (x1 - 1, cy), (cx, y1 - 1), (x0, cy)]  # diamond


def _draw_item(draw: ImageDraw.ImageDraw, item: dict[str, Any], fill: Any) -> None:
    box = item["box"]
    xy = [box[0], box[1], box[2] - 1, box[3] - 1]
    if item["kind"] != "shape" or item["shape"] == "square":
        draw.rectangle(xy, fill=fill)
    elif item["shape"] == "circle":
        draw.ellipse(xy, fill=fill)
    else:
        draw.polygon(_shape_polygon(item["shape"], box), fill=fill)


def render_scene(scene: Scene) -> tuple[Image.Image, np.ndarray]:
    """Render a scene.

    Returns the RGB image (224x224) and an item-id map, int16 [224, 224]: 0 for background,
    i + 1 for pixels of ``scene["items"][i]``.
    """
    noise_rng = np.random.default_rng(scene["noise_seed"])
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    stripes = ((xs + ys) // scene["stripe_period"]) % 2
    base = np.array(scene["background"], dtype=np.float32)
    arr = (
        base[None, None, :] + 10.0 * stripes[..., None] + noise_rng.normal(0, 9, (IMAGE_SIZE, IMAGE_SIZE, 3))
    )
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return paint_items(img, scene["items"])


def paint_items(img: Image.Image, items: list[dict[str, Any]]) -> tuple[Image.Image, np.ndarray]:
    """Draw ``items`` over a background image (modified in place); returns (image, item-id map).

    The id map is int16 [224, 224]: 0 where no item is, i + 1 on pixels of ``items[i]``.
    """
    ids = Image.new("I", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw, idraw = ImageDraw.Draw(img), ImageDraw.Draw(ids)
    for i, it in enumerate(items):
        if it["kind"] == "shape":
            _draw_item(draw, it, COLOURS[it["colour"]])
        elif it["kind"] == "tile":
            _draw_item(draw, it, (250, 250, 250))
        elif it["kind"] == "caption":
            _draw_item(draw, it, NEON[it["neon"]])
        _draw_item(idraw, it, i + 1)
    out = np.array(img)
    for it in items:
        x0, y0, x1, y1 = it["box"]
        if it["kind"] == "tile":
            m = glyph_mask(it["text"], 2)
            oy, ox = y0 + (y1 - y0 - m.shape[0]) // 2, x0 + (x1 - x0 - m.shape[1]) // 2
            out[oy : oy + m.shape[0], ox : ox + m.shape[1]][m] = (10, 10, 10)
        elif it["kind"] == "caption":
            m = text_mask(it["text"], 2)[:, :24]
            oy, ox = y0 + 2, x0 + 1
            out[oy : oy + m.shape[0], ox : ox + m.shape[1]][m] = (0, 0, 0)
        elif it["kind"] == "checker":
            p = it["period"]
            yy, xx = np.mgrid[y0:y1, x0:x1]
            a = NEON[it["neon"][0]]
            b = [c for j, c in enumerate(NEON) if j != it["neon"][0]][it["neon"][1]]
            sel = (((yy - y0) // p + (xx - x0) // p) % 2).astype(bool)
            out[y0:y1, x0:x1] = np.where(sel[..., None], np.array(a), np.array(b))
    return Image.fromarray(out, "RGB"), np.array(ids, dtype=np.int16)


def patch_item_ids(ids: np.ndarray, min_pixels: int = 20) -> np.ndarray:
    """Per-patch item id (0 = background): the item covering most of the patch, int64 [196]."""
    blocks = ids.reshape(GRID, PATCH, GRID, PATCH).transpose(0, 2, 1, 3).reshape(GRID * GRID, -1)
    top = int(ids.max()) + 1
    counts = np.stack([(blocks == k).sum(1) for k in range(1, top)], 1) if top > 1 else np.zeros((196, 1))
    best = counts.argmax(1) + 1
    best[counts.max(1) < min_pixels] = 0
    return best.astype(np.int64)
