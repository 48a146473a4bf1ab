"""Evaluation items: the testbed's generated questions, or a user JSONL of real data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


@dataclass(frozen=True)
class EvalItem:
    """One question: ``uid`` is stable across runs (used by the resume cache)."""

    uid: str
    image: Image.Image | Path
    question: str
    answer: str
    family: str = "all"


def generated_items(seed: int, num_samples: int, variant: str = "v1") -> list[EvalItem]:
    """``num_samples`` freshly generated testbed questions of split ``seed`` (families balanced),
    of testbed ``variant`` ("v1": ``testbed.make_samples``; "v2": ``questions_v2.make_samples_v2``)."""
    from ..testbed import TRAIN_SEED_BASE, make_samples
    from ..testbed.questions_v2 import TRAIN_SEED_BASE_V2, make_samples_v2
    from ..testbed.variant import VARIANTS

    if variant not in VARIANTS:
        raise ValueError(f"unknown testbed variant {variant!r} (v1 or v2)")
    first_training_seed = TRAIN_SEED_BASE if variant == "v1" else TRAIN_SEED_BASE_V2
    if seed >= first_training_seed:
        raise ValueError(
            f"seed {seed} is a {variant} training seed (>= {first_training_seed}); evaluate on a held-out seed"
        )
    if variant == "v2":
        return [
            EvalItem(f"testbed-v2-{seed}-{i}", s.image, s.question, s.answer, s.family)
            for i, s in enumerate(make_samples_v2(seed, num_samples))
        ]
    return [
        EvalItem(f"testbed-{seed}-{i}", s.image, s.question, s.answer, s.family)
        for i, s in enumerate(make_samples(seed, num_samples))
    ]


def jsonl_items(path: str | Path, num_samples: int | None = None) -> list[EvalItem]:
    """Items from a JSONL file with ``image`` (path, relative to the file), ``question``, ``answer``
    and optionally ``family`` and ``id`` per line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    items = []
    with path.open() as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                image = Path(row["image"])
                item = EvalItem(
                    str(row.get("id", line_no)),
                    image if image.is_absolute() else path.parent / image,
                    str(row["question"]),
                    str(row["answer"]),
                    str(row.get("family", "all")),
                )
            except (json.JSONDecodeError, KeyError) as err:
                raise ValueError(
                    f"{path}:{line_no}: expected JSON with image, question, answer ({err})"
                ) from None
            if not Path(item.image).is_file():
                raise FileNotFoundError(f"{path}:{line_no}: image file not found: {item.image}")
            items.append(item)
            if num_samples is not None and len(items) >= num_samples:
                break
    if not items:
        raise ValueError(f"{path} holds no items")
    return items
