"""Samples (image + question + answer) and splits written to disk.

Sample ``i`` of seed ``s`` comes from ``numpy.random.default_rng([s, i])``, so every sample
is reproducible on its own and the same on any machine. Training draws its scenes from seeds
``>= TRAIN_SEED_BASE``; evaluation seeds below it (the default is ``EVAL_SEED``) are never seen
in training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .questions import FAMILIES, answer_from_scene, draw_spec, question_text
from .scenes import Scene, make_scene, render_scene

TRAIN_SEED_BASE = 1_000_000
EVAL_SEED = 1234


@dataclass
class Sample:
    """One visual question: ``image`` 224x224 RGB, a one-word ``answer``."""

    image: Image.Image
    question: str
    answer: str
    family: str
    subfamily: str
    scene: Scene = field(repr=False)
    spec: dict[str, Any] = field(repr=False)


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator that draws sample ``index`` of split ``seed``."""
    return np.random.default_rng([int(seed), int(index)])


def make_sample(seed: int, index: int, family: str | None = None) -> Sample:
    """Sample ``index`` of split ``seed``; ``family`` forces the question family."""
    rng = sample_rng(seed, index)
    scene = make_scene(rng)
    spec = draw_spec(scene, rng, family)
    image, _ = render_scene(scene)
    return Sample(
        image=image,
        question=question_text(spec),
        answer=answer_from_scene(scene, spec),
        family=spec["family"],
        subfamily=spec["subfamily"],
        scene=scene,
        spec=spec,
    )


def make_samples(seed: int, n: int, balanced: bool = True) -> list[Sample]:
    """``n`` samples of split ``seed``; ``balanced`` cycles the families (index % 6)."""
    return [make_sample(seed, i, FAMILIES[i % len(FAMILIES)] if balanced else None) for i in range(n)]


def write_split(out_dir: str | Path, seed: int, n: int) -> Path:
    """Write ``n`` samples as PNGs plus ``samples.jsonl`` (image, question, answer, family, ...).

    Returns the JSONL path. Image paths in the JSONL are relative to ``out_dir``.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    path = out / "samples.jsonl"
    with path.open("w") as f:
        for i, s in enumerate(make_samples(seed, n)):
            name = f"images/{seed}_{i:06d}.png"
            s.image.save(out / name)
            row = {
                "image": name,
                "question": s.question,
                "answer": s.answer,
                "family": s.family,
                "subfamily": s.subfamily,
                "scene": s.scene,
                "spec": s.spec,
            }
            f.write(json.dumps(row) + "\n")
    return path
