"""Training batches drawn from the generator (run inside a DataLoader worker).

Stage 1 (vision pretraining): images plus dense per-patch labels.
Stage 2 (QA): images plus several question/answer pairs each, tokenised, with the patches of
the items each question is about (for the grounding loss).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerFast

from .data import sample_rng
from .questions import answer_from_scene, draw_spec, question_text, relevant_items
from .scenes import (
    COLOURS,
    DIGITS,
    GRID,
    KINDS,
    PATCH,
    SHAPES,
    SIZES,
    make_scene,
    patch_item_ids,
    render_scene,
)

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
IGNORE = -100


def pixels(image: Image.Image) -> torch.Tensor:
    """CLIP-normalised pixels of a 224x224 image, float32 [3, 224, 224] (as the processor does)."""
    arr = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(((arr - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1).copy())


def patch_labels(scene: dict[str, Any], ids: np.ndarray) -> dict[str, np.ndarray]:
    """Dense per-patch targets, each int64 [196]: kind, colour, shape, size, digit (-100 = n/a)."""
    owner = patch_item_ids(ids)
    out = {k: np.full(GRID * GRID, IGNORE, dtype=np.int64) for k in ("colour", "shape", "size", "digit")}
    kind = np.zeros(GRID * GRID, dtype=np.int64)
    colours, sizes = list(COLOURS), list(SIZES)
    for p, item_id in enumerate(owner):
        if item_id == 0:
            continue
        it = scene["items"][item_id - 1]
        kind[p] = KINDS.index(it["kind"])
        if it["kind"] == "shape":
            out["colour"][p] = colours.index(it["colour"])
            out["shape"][p] = SHAPES.index(it["shape"])
            out["size"][p] = sizes.index(it["size"])
        elif it["kind"] == "tile":
            out["digit"][p] = DIGITS.index(it["text"])
    out["kind"] = kind
    return out


def touched_patches(ids: np.ndarray, items: list[int]) -> np.ndarray:
    """Bool [196]: patches holding at least one pixel of the given item indices."""
    blocks = ids.reshape(GRID, PATCH, GRID, PATCH).transpose(0, 2, 1, 3).reshape(GRID * GRID, -1)
    return np.isin(blocks, np.array(items, dtype=np.int64) + 1).any(1)


class EndlessStream(torch.utils.data.IterableDataset):
    """Batches ``make_batch(start)``, ``make_batch(start + 1)``, ... for ever (a resumable stream)."""

    start: int

    def make_batch(self, step: int) -> dict[str, Any]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict[str, Any]]:
        step = self.start
        while True:
            yield self.make_batch(step)
            step += 1


class SceneStream(EndlessStream):
    """Endless batches from split ``seed``, starting at batch ``start`` (for resuming)."""

    def __init__(
        self,
        stage: int,
        seed: int,
        start: int,
        batch: int,
        tokenizer: PreTrainedTokenizerFast | None = None,
        qa_per_image: int = 6,
        family_weights: dict[str, float] | None = None,
    ) -> None:
        self.stage, self.seed, self.start, self.batch = stage, seed, start, batch
        self.tokenizer, self.qa, self.weights = tokenizer, qa_per_image, family_weights

    def make_batch(self, step: int) -> dict[str, Any]:
        imgs, labels, qas = [], [], []
        for j in range(self.batch):
            rng = sample_rng(self.seed, step * self.batch + j)
            scene = make_scene(rng)
            image, ids = render_scene(scene)
            imgs.append(pixels(image))
            if self.stage == 1:
                labels.append(patch_labels(scene, ids))
                continue
            assert self.tokenizer is not None
            img_qas = []
            for _ in range(self.qa):
                spec = draw_spec(scene, rng, weights=self.weights)
                q_ids = self.tokenizer(question_text(spec), add_special_tokens=False)["input_ids"]
                a_id = self.tokenizer.convert_tokens_to_ids(answer_from_scene(scene, spec))
                ground = touched_patches(ids, relevant_items(scene, spec))
                img_qas.append({"q": q_ids, "a": a_id, "ground": ground, "family": spec["family"]})
            qas.append(img_qas)
        out: dict[str, Any] = {"pixel_values": torch.stack(imgs)}
        if self.stage == 1:
            for k in labels[0]:
                out[k] = torch.from_numpy(np.stack([lab[k] for lab in labels]))
        else:
            out["qas"] = qas
            out["drop"] = torch.from_numpy(sample_rng(self.seed + 7, step).random(self.batch) < 0.06)
        return out
