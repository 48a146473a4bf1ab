"""Training batches of the testbed v2 recipe (``train_v2``): one endless, resumable stream per stage.

``clip`` batches: images, whole-scene descriptions and a hard negative (the description of the
scene with one attribute changed, :func:`perturb`); ``align``: images and descriptions; ``qa``:
images and packed questions, each with the patches it is about (:func:`ground_patches_v2`, the
grounding-loss target). Every batch is a pure function of (split seed, stage, step).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from .batches import EndlessStream, pixels, touched_patches
from .questions import COLOURS, LETTERS, SHAPES, relevant_items
from .questions_v2 import answer_v2, describe, draw_spec_v2, question_text_v2
from .scenes import DIGITS, GRID, PATCH, Scene
from .scenes_v2 import (
    REGION_COLOURS,
    TEXTURES,
    make_scene_v2,
    patch_regions,
    place_of,
    place_region,
    render_scene_v2,
)

STAGES: tuple[str, ...] = ("clip", "align", "qa")
MAX_TEXT = 160  # description tokens (a 5-region, 10-item scene is about 110)


#: Hard-negative kinds. ``basic`` (runs 1-2): one region colour or texture, or one shape's colour or
#: shape. ``layout`` adds what a mean-pooled contrastive tower otherwise need not encode: the
#: tile's digit, and where things are (two regions' contents or two items' places swapped).
NEGATIVES: dict[str, tuple[str, ...]] = {
    "basic": ("region_colour", "region_texture", "shape_colour", "shape_kind"),
    "layout": (
        "region_colour", "region_texture", "shape_colour", "shape_kind", "digit", "region_swap", "item_swap",
    ),
}  # fmt: skip


def _place(box: list[int]) -> str:
    return place_of((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def _swap_pairs(things: list[dict[str, Any]], differ: list[str]) -> list[tuple[int, int]]:
    """Index pairs in different places whose ``differ`` keys are not all equal."""
    return [
        (i, j)
        for i in range(len(things))
        for j in range(i + 1, len(things))
        if _place(things[i]["box"]) != _place(things[j]["box"])
        and any(things[i].get(k) != things[j].get(k) for k in differ)
    ]


def _apply(out: Scene, kind: str, rng: np.random.Generator) -> bool:
    """Change ``out`` in place by one hard-negative ``kind``; False where the scene has no such change."""
    shapes = [it for it in out["items"] if it["kind"] == "shape"]
    if kind in ("region_colour", "region_texture"):
        reg = out["regions"][int(rng.integers(len(out["regions"])))]
        if kind == "region_colour":
            reg["colour"] = str(rng.choice([c for c in REGION_COLOURS if c != reg["colour"]]))
        else:
            reg["texture"] = str(rng.choice([t for t in TEXTURES if t != reg["texture"]]))
        return True
    if kind in ("shape_colour", "shape_kind"):
        if not shapes:
            return False
        it = shapes[int(rng.integers(len(shapes)))]
        if kind == "shape_colour":
            it["colour"] = str(rng.choice([c for c in COLOURS if c != it["colour"]]))
        else:
            it["shape"] = str(rng.choice([s for s in SHAPES if s != it["shape"]]))
        return True
    if kind == "digit":
        tiles = [it for it in out["items"] if it["kind"] == "tile"]
        if not tiles:
            return False
        tiles[0]["text"] = str(rng.choice([d for d in DIGITS if d != tiles[0]["text"]]))
        return True
    if kind == "region_swap":  # same layout, two regions' contents exchanged
        content = ["colour", "texture", "scale", "specks"]
        pairs = _swap_pairs(out["regions"], content)
        if not pairs:
            return False
        i, j = pairs[int(rng.integers(len(pairs)))]
        a, b = out["regions"][i], out["regions"][j]
        for k in content:
            a[k], b[k] = b[k], a[k]
        return True
    # item_swap: two items exchange places (a description only: the negative is never rendered)
    pairs = _swap_pairs(out["items"], ["kind", "colour", "shape", "size", "text"])
    if not pairs:
        return False
    i, j = pairs[int(rng.integers(len(pairs)))]
    a, b = out["items"][i], out["items"][j]
    for k in ("box", "row", "col"):
        a[k], b[k] = b[k], a[k]
    return True


def perturb(scene: Scene, rng: np.random.Generator, negatives: str = "basic") -> Scene:
    """A copy of ``scene`` with one attribute or placement changed (a contrastive hard negative).

    The kind is drawn uniformly from ``NEGATIVES[negatives]``; a kind the scene cannot show (no
    shape, no tile) falls back to a region colour or texture change. ``basic`` draws exactly as
    runs 1-2 of the v2 model did.
    """
    out = copy.deepcopy(scene)
    kinds = NEGATIVES[negatives]
    kind = kinds[int(rng.integers(len(kinds)))]
    if not _apply(out, kind, rng):
        _apply(out, "region_texture", rng)
    return out


def choice_drill(rng: np.random.Generator) -> tuple[str, str]:
    """A text-only multiple-choice lookup: (question naming its value, the letter of that value).

    "red ? A. blue B. red C. green D. yellow answer with the letter." -> "B". It trains the
    letter lookup that choice questions need (measured: the v2 run-2 model picks the right letter
    no more often when it knows the attribute than when it does not) without any image content.
    """
    pool = list(COLOURS if rng.random() < 0.5 else SHAPES)
    opts = [pool[int(i)] for i in rng.choice(len(pool), size=4, replace=False)]
    k = int(rng.integers(4))
    listed = " ".join(f"{L}. {o}" for L, o in zip(LETTERS, opts))
    return f"{opts[k]} ? {listed} answer with the letter.", LETTERS[k]


def place_question(item: dict[str, Any], horizontal: bool) -> tuple[str, str] | None:
    """The single-item place question about a shape ``item`` on one axis: (question, answer), or
    None for an item in the middle column (row) of the 7x7 cell grid.

    "is the red circle at the left or right of the image?" -> left / right (cell column < 3 or
    > 3); vertical: "... at the top or bottom of the image?" -> top / bottom (cell row).
    """
    key, (lo, hi) = ("col", ("left", "right")) if horizontal else ("row", ("top", "bottom"))
    if item[key] == 3:
        return None
    return f"is the {item['colour']} {item['shape']} at the {lo} or {hi} of the image?", lo if item[key] < 3 else hi


def place_drill(scene: Scene, rng: np.random.Generator) -> tuple[str, str, int] | None:
    """A random :func:`place_question` about ``scene``: (question, answer, item index), or None.

    It is the step before the two-item ``spatial`` comparison, which stays at chance on both
    testbeds: can the model read where one named item is at all? Colour + shape name one shape
    (drawn without replacement by ``scenes.draw_items``); the axis is drawn first, then a shape
    off that axis's middle line.
    """
    horizontal = bool(rng.random() < 0.5)
    key = "col" if horizontal else "row"
    fits = [i for i, it in enumerate(scene["items"]) if it["kind"] == "shape" and it[key] != 3]
    if not fits:
        return None
    i = fits[int(rng.integers(len(fits)))]
    q, a = place_question(scene["items"][i], horizontal)  # type: ignore[misc]
    return q, a, i


def ground_patches_v2(scene: Scene, ids: np.ndarray, spec: dict[str, Any]) -> np.ndarray | None:
    """Bool [196]: the patches a question is about (the grounding target), None for whole-scene ones.

    Item families: every patch touched by the items the question names (v1's rule). ``region``:
    the patches of the asked place whose majority region is the one answered about.
    """
    fam = spec["family"]
    if fam == "scene":
        return None
    if fam != "region":
        return touched_patches(ids, relevant_items(scene, spec))
    k = place_region(scene, spec["place"])
    centre = np.arange(GRID) * PATCH + PATCH / 2
    in_place = np.array([place_of(x, y) == spec["place"] for y in centre for x in centre])
    return in_place & (patch_regions(scene) == k)


def text_ids(tok: Any, text: str, limit: int = MAX_TEXT) -> list[int]:
    """Token ids of ``text`` (no special tokens), cut at ``limit``."""
    return tok(text, add_special_tokens=False)["input_ids"][:limit]


class V2Stream(EndlessStream):
    """Endless batches for one v2 stage from split ``seed``, starting at batch ``start``."""

    def __init__(
        self,
        stage: str,
        seed: int,
        start: int,
        batch: int,
        tokenizer: Any,
        qa_per_image: int = 6,
        negatives: str = "basic",
        drill: float = 0.0,
        place: float = 0.0,
    ) -> None:
        """``negatives``: a :data:`NEGATIVES` key (clip); ``drill``: share of qa questions replaced
        by a :func:`choice_drill`, ``place``: by a :func:`place_drill` about the same image (each
        drawn from its own generator, so 0 leaves the stream as it was)."""
        if negatives not in NEGATIVES:
            raise ValueError(f"unknown hard negatives {negatives!r}; choose from {sorted(NEGATIVES)}")
        for name, share in (("drill", drill), ("place", place)):
            if not 0.0 <= share < 1.0:
                raise ValueError(f"{name} share must be in [0, 1), got {share}")
        if drill + place >= 1.0:
            raise ValueError(f"drill + place shares must stay below 1, got {drill} + {place}")
        self.stage, self.seed, self.start, self.batch = stage, seed, start, batch
        self.tok, self.qa, self.negatives, self.drill = tokenizer, qa_per_image, negatives, drill
        self.place = place

    def make_batch(self, step: int) -> dict[str, Any]:
        out: dict[str, Any] = {"pixel_values": [], "text": [], "negative": [], "qas": []}
        for j in range(self.batch):
            rng = np.random.default_rng([self.seed, STAGES.index(self.stage), step * self.batch + j])
            scene = make_scene_v2(rng)
            image, item_ids = render_scene_v2(scene)
            out["pixel_values"].append(pixels(image))
            if self.stage in ("clip", "align"):
                out["text"].append(text_ids(self.tok, describe(scene)))
            if self.stage == "clip":
                out["negative"].append(text_ids(self.tok, describe(perturb(scene, rng, self.negatives))))
            if self.stage == "qa":
                qas = []
                drill_rng = np.random.default_rng([self.seed, 77, step * self.batch + j])
                place_rng = np.random.default_rng([self.seed, 78, step * self.batch + j])
                for _ in range(self.qa):
                    spec = draw_spec_v2(scene, rng)
                    if self.drill and drill_rng.random() < self.drill:
                        q, a = choice_drill(drill_rng)
                        qas.append({"q": text_ids(self.tok, q), "a": self.tok.convert_tokens_to_ids(a)})
                        qas[-1].update(ground=None, family="drill")
                        continue
                    if self.place and place_rng.random() < self.place:
                        drawn = place_drill(scene, place_rng)
                        if drawn is not None:
                            q, a, k = drawn
                            qas.append({"q": text_ids(self.tok, q), "a": self.tok.convert_tokens_to_ids(a)})
                            qas[-1].update(ground=touched_patches(item_ids, [k]), family="place")
                            continue
                    qas.append(
                        {
                            "q": text_ids(self.tok, question_text_v2(spec)),
                            "a": self.tok.convert_tokens_to_ids(answer_v2(scene, spec)),
                            "ground": ground_patches_v2(scene, item_ids, spec),
                            "family": spec["family"],
                        }
                    )
                out["qas"].append(qas)
        out["pixel_values"] = torch.stack(out["pixel_values"])
        drop_rng = np.random.default_rng([self.seed, 99, step])
        out["drop"] = torch.from_numpy(drop_rng.random(self.batch) < 0.06)
        return out


def pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    """Right-padded LongTensor [B, max len]."""
    n = max(len(s) for s in seqs)
    return torch.tensor([s + [value] * (n - len(s)) for s in seqs], dtype=torch.long)
