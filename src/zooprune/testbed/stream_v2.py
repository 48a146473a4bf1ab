"""Training batches of the testbed v2 recipe (``train_v2``): one endless, resumable stream per stage.

``clip`` batches: images, whole-scene descriptions and a hard negative (the description of the
scene with one attribute changed, :func:`perturb`); ``align``: images and descriptions; ``qa``:
images and packed questions, each with the patches it is about (:func:`ground_patches_v2`, the
grounding-loss target). Every batch is a pure function of (split seed, stage, step).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .batches import pixels, touched_patches
from .questions import COLOURS, SHAPES, relevant_items
from .questions_v2 import answer_v2, describe, draw_spec_v2, question_text_v2
from .scenes import GRID, PATCH, Scene
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


def perturb(scene: Scene, rng: np.random.Generator) -> Scene:
    """A copy of ``scene`` with one region or shape attribute changed (a contrastive hard negative)."""
    out = copy.deepcopy(scene)
    shapes = [it for it in out["items"] if it["kind"] == "shape"]
    what = int(rng.integers(4))
    if what < 2 or not shapes:
        reg = out["regions"][int(rng.integers(len(out["regions"])))]
        if what == 0:
            reg["colour"] = str(rng.choice([c for c in REGION_COLOURS if c != reg["colour"]]))
        else:
            reg["texture"] = str(rng.choice([t for t in TEXTURES if t != reg["texture"]]))
    else:
        it = shapes[int(rng.integers(len(shapes)))]
        if what == 2:
            it["colour"] = str(rng.choice([c for c in COLOURS if c != it["colour"]]))
        else:
            it["shape"] = str(rng.choice([s for s in SHAPES if s != it["shape"]]))
    return out


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


class V2Stream(torch.utils.data.IterableDataset):
    """Endless batches for one v2 stage from split ``seed``, starting at batch ``start``."""

    def __init__(
        self, stage: str, seed: int, start: int, batch: int, tokenizer: Any, qa_per_image: int = 6
    ) -> None:
        self.stage, self.seed, self.start, self.batch = stage, seed, start, batch
        self.tok, self.qa = tokenizer, qa_per_image

    def __iter__(self) -> Iterator[dict[str, Any]]:
        step = self.start
        while True:
            yield self.make_batch(step)
            step += 1

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
                out["negative"].append(text_ids(self.tok, describe(perturb(scene, rng))))
            if self.stage == "qa":
                qas = []
                for _ in range(self.qa):
                    spec = draw_spec_v2(scene, rng)
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
