"""Testbed v2 questions, whole-scene descriptions, samples and the v2 tokenizer vocabulary.

Families: v1's six (existence, attribute, counting, spatial, reading, choice; drawn by
:func:`questions.draw_spec` on the v2 scene's items) plus

- ``region``: "what colour is the background at the top left?" -> a region colour;
  "what pattern is the background at the top left?" -> a texture. Asked only where one region
  covers at least 75 % of that third of the image.
- ``scene``: "how many background regions are there?" -> three..five; "which pattern covers
  most of the background?" -> a texture (asked only with a 1.2x margin over the runner-up;
  otherwise the count is asked).

A forced family that does not fit the scene (reading without a tile, a region question where
no third of the image is one region) is replaced by another, as in v1.

:func:`describe` lists every region and every item (decoys included): the target text of the
alignment stage and of the contrastive vision pretraining. Sample ``i`` of seed ``s`` comes from
``numpy.random.default_rng([s, i])`` as in v1; v2 seeds are their own splits
(``TRAIN_SEED_BASE_V2`` and up for training, ``VAL_SEED_V2`` / ``EVAL_SEED_V2`` held out).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .questions import COUNT_WORDS, FAMILIES, answer_from_scene, draw_spec, question_text, vocabulary
from .scenes import Scene
from .scenes_v2 import (
    PLACES,
    REGION_COLOURS,
    TEXTURES,
    make_scene_v2,
    place_of,
    place_region,
    render_scene_v2,
    texture_areas,
)

FAMILIES_V2: tuple[str, ...] = FAMILIES + ("region", "scene")
TRAIN_SEED_BASE_V2 = 2_000_000
VAL_SEED_V2 = 998
EVAL_SEED_V2 = 1235

Spec = dict[str, Any]


def _pick(rng: np.random.Generator, seq: list[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _region(scene: Scene, rng: np.random.Generator) -> Spec | None:
    places = [p for p in PLACES if place_region(scene, p) is not None]
    if not places:
        return None
    return {"family": "region", "subfamily": _pick(rng, ["colour", "pattern"]), "place": _pick(rng, places)}


def _scene(scene: Scene, rng: np.random.Generator) -> Spec | None:
    if rng.random() < 0.5:
        return {"family": "scene", "subfamily": "regions"}
    areas = sorted(texture_areas(scene).values(), reverse=True)
    if len(areas) > 1 and areas[0] < 1.2 * areas[1]:
        return {"family": "scene", "subfamily": "regions"}  # no clear majority pattern
    return {"family": "scene", "subfamily": "pattern"}


def draw_spec_v2(
    scene: Scene,
    rng: np.random.Generator,
    family: str | None = None,
    weights: dict[str, float] | None = None,
) -> Spec:
    """One question spec for a v2 scene (family forced, or drawn uniformly / by ``weights``)."""
    probs = None
    if weights is not None:
        w = np.array([weights.get(f, 0.0) for f in FAMILIES_V2], dtype=np.float64)
        probs = w / w.sum()
    for _ in range(100):
        if family is not None:
            fam = family
        elif probs is None:
            fam = _pick(rng, list(FAMILIES_V2))
        else:
            fam = FAMILIES_V2[int(rng.choice(len(FAMILIES_V2), p=probs))]
        if fam in FAMILIES:
            return draw_spec(scene, rng, fam)
        spec = _region(scene, rng) if fam == "region" else _scene(scene, rng)
        if spec is not None:
            return spec
        family = None
    raise RuntimeError("no question fits this scene")


def question_text_v2(spec: Spec) -> str:
    """The question in words."""
    fam, sub = spec["family"], spec["subfamily"]
    if fam == "region":
        what = "colour" if sub == "colour" else "pattern"
        return f"what {what} is the background at the {spec['place']}?"
    if fam == "scene":
        if sub == "regions":
            return "how many background regions are there?"
        return "which pattern covers most of the background?"
    return question_text(spec)


def answer_v2(scene: Scene, spec: Spec) -> str:
    """The answer, derived from the scene description only."""
    fam, sub = spec["family"], spec["subfamily"]
    if fam == "region":
        k = place_region(scene, spec["place"])
        if k is None:
            raise ValueError(f"no single region at {spec['place']}")
        reg = scene["regions"][k]
        return reg["colour"] if sub == "colour" else reg["texture"]
    if fam == "scene":
        if sub == "regions":
            return COUNT_WORDS[len(scene["regions"])]
        areas = texture_areas(scene)
        return max(areas, key=lambda t: areas[t])
    return answer_from_scene(scene, spec)


def _item_phrase(it: dict[str, Any]) -> str:
    x0, y0, x1, y1 = it["box"]
    where = place_of((x0 + x1) / 2, (y0 + y1) / 2)
    if it["kind"] == "shape":
        return f"{it['size']} {it['colour']} {it['shape']} at {where}"
    if it["kind"] == "tile":
        return f"white tile {it['text']} at {where}"
    return f"{it['kind']} at {where}"


def describe(scene: Scene) -> str:
    """Whole-scene description: every background region (largest first) and every item."""
    regs = sorted(scene["regions"], key=lambda r: -(r["box"][2] - r["box"][0]) * (r["box"][3] - r["box"][1]))
    parts = [f"background : {COUNT_WORDS[len(regs)]} regions ."]
    for r in regs:
        x0, y0, x1, y1 = r["box"]
        scale = "" if r["texture"] == "plain" else f"{r['scale']} "
        specks = " with specks" if r["specks"] else ""
        parts.append(
            f"{scale}{r['colour']} {r['texture']}{specks} at {place_of((x0 + x1) / 2, (y0 + y1) / 2)} ."
        )
    items = sorted(scene["items"], key=lambda it: (it["row"], it["col"]))
    parts.append("objects : " + " , ".join(_item_phrase(it) for it in items) + " .")
    return " ".join(parts)


def vocabulary_v2() -> list[str]:
    """Every word of a v2 question, answer or description."""
    words = set(vocabulary())
    words |= set(REGION_COLOURS) | set(TEXTURES) | {w for p in PLACES for w in p.split()}
    words |= {
        "background", "regions", "pattern", "which", "covers", "most", "at", "with", "specks",
        "fine", "coarse", "objects", "checker", "caption", ",", ":", "describe", "scene",
    }  # fmt: skip
    return sorted(words)


@dataclass
class SampleV2:
    """One v2 visual question (``image`` 224x224 RGB, one-word ``answer``) and its scene."""

    image: Image.Image
    question: str
    answer: str
    family: str
    subfamily: str
    scene: Scene = field(repr=False)
    spec: Spec = field(repr=False)
    item_ids: np.ndarray = field(repr=False)


def make_sample_v2(seed: int, index: int, family: str | None = None) -> SampleV2:
    """Sample ``index`` of v2 split ``seed``; ``family`` forces the question family."""
    rng = np.random.default_rng([int(seed), int(index)])
    scene = make_scene_v2(rng)
    spec = draw_spec_v2(scene, rng, family)
    image, ids = render_scene_v2(scene)
    return SampleV2(
        image=image,
        question=question_text_v2(spec),
        answer=answer_v2(scene, spec),
        family=spec["family"],
        subfamily=spec["subfamily"],
        scene=scene,
        spec=spec,
        item_ids=ids,
    )


def make_samples_v2(seed: int, n: int) -> list[SampleV2]:
    """``n`` family-balanced samples (index % 8 picks the family)."""
    return [make_sample_v2(seed, i, FAMILIES_V2[i % len(FAMILIES_V2)]) for i in range(n)]


def write_split_v2(out_dir: str | Path, seed: int, n: int) -> Path:
    """Write ``n`` v2 samples as PNGs plus ``samples.jsonl`` (the JSONL ``zooprune eval --data`` reads).

    Rows: ``id``, ``image`` (relative to ``out_dir``), ``question``, ``answer``, ``family``,
    ``subfamily``, ``scene``, ``spec``. Refuses training seeds.
    """
    if seed >= TRAIN_SEED_BASE_V2:
        raise ValueError(f"seed {seed} is a v2 training seed (>= {TRAIN_SEED_BASE_V2})")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    path = out / "samples.jsonl"
    with path.open("w") as f:
        for i, s in enumerate(make_samples_v2(seed, n)):
            name = f"images/v2_{seed}_{i:06d}.png"
            s.image.save(out / name)
            row = {
                "id": f"testbed-v2-{seed}-{i}",
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


def main(argv: list[str] | None = None) -> None:
    """``python -m zooprune.testbed.questions_v2 --out DIR``: write a held-out v2 split."""
    ap = argparse.ArgumentParser(prog="python -m zooprune.testbed.questions_v2", description=main.__doc__)
    ap.add_argument("--out", required=True, help="directory for images/ and samples.jsonl")
    ap.add_argument("--seed", type=int, default=EVAL_SEED_V2)
    ap.add_argument("--n", type=int, default=600)
    args = ap.parse_args(argv)
    print(write_split_v2(args.out, args.seed, args.n))


if __name__ == "__main__":
    main()
