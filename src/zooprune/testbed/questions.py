"""Question families over a scene description, and the answers derived from it.

A question is first drawn as a *spec* (a JSON-able dict); ``question_text(spec)`` words it and
``answer_from_scene(scene, spec)`` derives the answer from the scene description alone.

Families (mirroring the benchmarks the paper reports):

- ``existence`` (POPE): "is there a red circle in the image?" -> yes/no; negatives drawn
  ``random``, ``popular`` (absent frequent pairs) or ``adversarial`` (absent pairs sharing a
  colour or a shape with a present object).
- ``attribute``: colour of the unique <shape>, shape of the unique <colour> object, size of
  the <colour> <shape> -> a colour / shape / small|large.
- ``counting``: "how many red objects are there?" / "how many circles are there?" -> zero..four.
- ``spatial``: "is the red circle left or right of the blue square?" -> left/right (or
  above/below).
- ``reading``: "what number is on the white tile?" -> a digit.
- ``choice``: the colour/shape question with four lettered options -> A/B/C/D.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .scenes import COLOURS, POPULAR, SHAPES, Scene, shapes_of

FAMILIES: tuple[str, ...] = ("existence", "attribute", "counting", "spatial", "reading", "choice")
COUNT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six")
LETTERS: tuple[str, ...] = ("A", "B", "C", "D")
PLURAL: dict[str, str] = {s: s + "s" for s in SHAPES}

Spec = dict[str, Any]


def _pick(rng: np.random.Generator, seq: list[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _existence(scene: Scene, rng: np.random.Generator) -> Spec | None:
    present = {(o["colour"], o["shape"]) for o in shapes_of(scene)}
    sub = _pick(rng, ["random", "popular", "adversarial"])
    if rng.random() < 0.5:
        colour, shape = _pick(rng, sorted(present))
        return {"family": "existence", "subfamily": sub, "colour": colour, "shape": shape}
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    if sub == "popular":
        absent = [cs for cs in absent if cs in POPULAR]
    elif sub == "adversarial":
        pc = {c for c, _ in present}
        ps = {s for _, s in present}
        absent = [(c, s) for c, s in absent if c in pc or s in ps]
    if not absent:
        return None
    colour, shape = _pick(rng, absent)
    return {"family": "existence", "subfamily": sub, "colour": colour, "shape": shape}


def _unique(objs: list[dict[str, Any]], key: str) -> list[str]:
    vals = [o[key] for o in objs]
    return sorted({v for v in vals if vals.count(v) == 1})


def _attribute(scene: Scene, rng: np.random.Generator, family: str = "attribute") -> Spec | None:
    objs = shapes_of(scene)
    sub = _pick(rng, ["colour", "shape"] if family == "choice" else ["colour", "shape", "size"])
    if sub == "colour":
        cands = _unique(objs, "shape")
        if not cands:
            return None
        spec = {"family": family, "subfamily": sub, "shape": _pick(rng, cands)}
    elif sub == "shape":
        cands = _unique(objs, "colour")
        if not cands:
            return None
        spec = {"family": family, "subfamily": sub, "colour": _pick(rng, cands)}
    else:
        o = _pick(rng, objs)
        spec = {"family": family, "subfamily": sub, "colour": o["colour"], "shape": o["shape"]}
    if family == "choice":
        right = answer_from_scene(scene, {**spec, "family": "attribute"})
        pool = [v for v in (COLOURS if sub == "colour" else SHAPES) if v != right]
        wrong = [pool[int(i)] for i in rng.choice(len(pool), size=3, replace=False)]
        options = wrong + [right]
        order = rng.permutation(4)
        spec["options"] = [options[int(i)] for i in order]
    return spec


def _counting(scene: Scene, rng: np.random.Generator) -> Spec | None:
    objs = shapes_of(scene)
    sub = _pick(rng, ["colour", "shape"])
    pool = list(COLOURS) if sub == "colour" else list(SHAPES)
    # a random object's value (so larger counts are asked more often), sometimes any value
    value = _pick(rng, objs)[sub] if rng.random() < 0.85 else _pick(rng, pool)
    return {"family": "counting", "subfamily": sub, sub: value}


def _spatial(scene: Scene, rng: np.random.Generator) -> Spec | None:
    objs = shapes_of(scene)
    sub = _pick(rng, ["horizontal", "vertical"])
    axis = "col" if sub == "horizontal" else "row"
    pairs = [(a, b) for a in objs for b in objs if a[axis] != b[axis]]
    if not pairs:
        return None
    a, b = _pick(rng, pairs)
    return {
        "family": "spatial",
        "subfamily": sub,
        "colour": a["colour"],
        "shape": a["shape"],
        "ref_colour": b["colour"],
        "ref_shape": b["shape"],
    }


def _reading(scene: Scene, rng: np.random.Generator) -> Spec | None:
    if not any(it["kind"] == "tile" for it in scene["items"]):
        return None
    return {"family": "reading", "subfamily": "digit"}


def draw_spec(
    scene: Scene,
    rng: np.random.Generator,
    family: str | None = None,
    weights: dict[str, float] | None = None,
) -> Spec:
    """Draw one question spec for ``scene``.

    The family is ``family`` if given, else drawn uniformly (or with relative ``weights``).
    Families that do not fit the scene (e.g. reading without a tile) are redrawn.
    """
    probs = None
    if weights is not None:
        w = np.array([weights.get(f, 0.0) for f in FAMILIES], dtype=np.float64)
        probs = w / w.sum()
    for _ in range(100):
        if family is not None:
            fam = family
        elif probs is None:
            fam = _pick(rng, list(FAMILIES))
        else:
            fam = FAMILIES[int(rng.choice(len(FAMILIES), p=probs))]
        if fam == "existence":
            spec = _existence(scene, rng)
        elif fam in ("attribute", "choice"):
            spec = _attribute(scene, rng, fam)
        elif fam == "counting":
            spec = _counting(scene, rng)
        elif fam == "spatial":
            spec = _spatial(scene, rng)
        else:
            spec = _reading(scene, rng)
        if spec is not None:
            return spec
        family = None
    raise RuntimeError("no question fits this scene")


def question_text(spec: Spec) -> str:
    """The question in words (lower case, one line)."""
    fam, sub = spec["family"], spec["subfamily"]
    if fam == "existence":
        return f"is there a {spec['colour']} {spec['shape']} in the image?"
    if fam in ("attribute", "choice"):
        if sub == "colour":
            q = f"what colour is the {spec['shape']}?"
        elif sub == "shape":
            q = f"what shape is the {spec['colour']} object?"
        else:
            q = f"what size is the {spec['colour']} {spec['shape']}?"
        if fam == "choice":
            opts = " ".join(f"{L}. {o}" for L, o in zip(LETTERS, spec["options"]))
            q = f"{q} {opts} answer with the letter."
        return q
    if fam == "counting":
        if sub == "colour":
            return f"how many {spec['colour']} objects are there?"
        return f"how many {PLURAL[spec['shape']]} are there?"
    if fam == "spatial":
        rel = "left or right of" if sub == "horizontal" else "above or below"
        return f"is the {spec['colour']} {spec['shape']} {rel} the {spec['ref_colour']} {spec['ref_shape']}?"
    return "what number is on the white tile?"


def _find(scene: Scene, colour: str | None = None, shape: str | None = None) -> list[dict[str, Any]]:
    return [
        o
        for o in shapes_of(scene)
        if (colour is None or o["colour"] == colour) and (shape is None or o["shape"] == shape)
    ]


def _the(scene: Scene, colour: str | None = None, shape: str | None = None) -> dict[str, Any]:
    found = _find(scene, colour, shape)
    if len(found) != 1:
        raise ValueError(f"reference to {colour} {shape} is not unique ({len(found)} matches)")
    return found[0]


def answer_from_scene(scene: Scene, spec: Spec) -> str:
    """The answer to ``spec`` derived from the scene description only."""
    fam, sub = spec["family"], spec["subfamily"]
    if fam == "existence":
        return "yes" if _find(scene, spec["colour"], spec["shape"]) else "no"
    if fam in ("attribute", "choice"):
        if sub == "colour":
            val = _the(scene, shape=spec["shape"])["colour"]
        elif sub == "shape":
            val = _the(scene, colour=spec["colour"])["shape"]
        else:
            val = _the(scene, spec["colour"], spec["shape"])["size"]
        return LETTERS[spec["options"].index(val)] if fam == "choice" else val
    if fam == "counting":
        return COUNT_WORDS[len(_find(scene, spec.get("colour"), spec.get("shape")))]
    if fam == "spatial":
        a = _the(scene, spec["colour"], spec["shape"])
        b = _the(scene, spec["ref_colour"], spec["ref_shape"])
        if sub == "horizontal":
            return "left" if a["col"] < b["col"] else "right"
        return "above" if a["row"] < b["row"] else "below"
    tiles = [it for it in scene["items"] if it["kind"] == "tile"]
    if len(tiles) != 1:
        raise ValueError("reading needs exactly one tile")
    return tiles[0]["text"]


def relevant_items(scene: Scene, spec: Spec) -> list[int]:
    """Indices into ``scene["items"]`` of the items a question is about (for grounding)."""
    fam = spec["family"]
    items = scene["items"]
    if fam == "reading":
        return [i for i, it in enumerate(items) if it["kind"] == "tile"]
    want: list[tuple[str | None, str | None]]
    if fam == "existence":
        want = [(spec["colour"], spec["shape"])]
    elif fam in ("attribute", "choice"):
        want = [(spec.get("colour"), spec.get("shape"))]
    elif fam == "counting":
        want = [(spec.get("colour"), spec.get("shape"))]
    else:
        want = [(spec["colour"], spec["shape"]), (spec["ref_colour"], spec["ref_shape"])]
    out = []
    for i, it in enumerate(items):
        if it["kind"] != "shape":
            continue
        for c, s in want:
            if (c is None or it["colour"] == c) and (s is None or it["shape"] == s):
                out.append(i)
                break
    return out


def vocabulary() -> list[str]:
    """Every word a question or an answer can contain (punctuation split off)."""
    words = {
        "is", "there", "a", "in", "the", "image", "what", "colour", "shape", "size", "object",
        "objects", "how", "many", "are", "left", "or", "right", "of", "above", "below", "number",
        "on", "white", "tile", "answer", "with", "letter", "yes", "no", "small", "large",
        "?", ".",
    }  # fmt: skip
    words |= set(COLOURS) | set(SHAPES) | set(PLURAL.values()) | set(COUNT_WORDS) | set(LETTERS)
    words |= {str(d) for d in range(10)}
    return sorted(words)
