"""Why are spatial questions at chance? Ask where each of the two compared items is, one at a time.

For ``--n`` held-out spatial questions ("is the red circle left or right of the blue square?"),
the model also answers the single-item place question for each of the two items on the same
axis ("is the red circle at the left or right of the image?", ``stream_v2.place_drill``; items
in the middle column / row are not asked). Reported, with 95 % Wilson intervals:

- ``spatial_acc`` and ``place_acc``: can the model read where one named item is at all?
- ``spatial_given_places``: for pairs on opposite sides of the middle (where the two place
  answers decide the comparison), spatial accuracy when both place answers are right vs not.
  Right places but chance comparisons means the comparison step is what is missing.
- the predicted answer words (a constant answer is a prior, not a reading).

No pruning method is involved. Teacher-forced first answer token, as in training validation.

    .venv/bin/python benchmarks/testbed_spatial_probe.py --model models/testbed-llava-v2 --variant v2
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from zooprune.eval.stats import wilson_interval
from zooprune.testbed.batches import pixels
from zooprune.testbed.evaluate import ValItem, first_tokens, held_out_family, load_for_probes, probe_parser
from zooprune.testbed.stream_v2 import place_question


@dataclass
class SpatialCase:
    """A held-out spatial question and the place questions of its two items (None: middle line)."""

    spatial: ValItem
    places: list[ValItem | None]
    opposite: bool  # the two items lie on opposite sides of the middle column / row


def _place_item(px: torch.Tensor, it: dict, sub: str) -> ValItem | None:
    qa = place_question(it, horizontal=sub == "horizontal")
    return None if qa is None else ValItem(px, qa[0], qa[1], "place")


def spatial_cases(variant: str, seed: int | None, n: int) -> list[SpatialCase]:
    """Up to ``n`` held-out spatial questions with the place questions of their two items."""
    out = []
    for s in held_out_family(variant, "spatial", seed, n):
        spec, px = s.spec, pixels(s.image)
        shapes = {(it["colour"], it["shape"]): it for it in s.scene["items"] if it["kind"] == "shape"}
        a = shapes[(spec["colour"], spec["shape"])]
        b = shapes[(spec["ref_colour"], spec["ref_shape"])]
        key = "col" if spec["subfamily"] == "horizontal" else "row"
        opposite = (a[key] - 3) * (b[key] - 3) < 0
        places = [_place_item(px, it, spec["subfamily"]) for it in (a, b)]
        out.append(SpatialCase(ValItem(px, s.question, s.answer, "spatial"), places, opposite))
    return out


def _cell(ok: np.ndarray) -> dict[str, object]:
    k, m = int(ok.sum()), int(ok.size)
    lo, hi = wilson_interval(k, m) if m else (float("nan"), float("nan"))
    return {"n": m, "acc": k / m if m else float("nan"), "ci95": [lo, hi]}


def summarise(cases: list[SpatialCase], spatial_pred: list[str], place_pred: list[str | None]) -> dict:
    """The report from the predictions (``place_pred``: two per case, None where not asked)."""
    sp_ok = np.array([p == c.spatial.answer for p, c in zip(spatial_pred, cases)])
    asked = [(q, p) for c, pair in zip(cases, zip(place_pred[0::2], place_pred[1::2])) for q, p in zip(c.places, pair)]
    pl_ok = np.array([p == q.answer for q, p in asked if q is not None])
    both_right, rest = [], []
    for i, c in enumerate(cases):
        if not c.opposite:
            continue
        right = all(q is not None and place_pred[2 * i + j] == q.answer for j, q in enumerate(c.places))
        (both_right if right else rest).append(sp_ok[i])
    return {
        "n": len(cases),
        "spatial_acc": _cell(sp_ok),
        "place_acc": _cell(pl_ok),
        "spatial_opposite_sides": _cell(sp_ok[[c.opposite for c in cases]]),
        "spatial_given_places": {
            "both_places_right": _cell(np.array(both_right, dtype=bool)),
            "a_place_wrong": _cell(np.array(rest, dtype=bool)),
        },
        "predicted_spatial": dict(sorted(Counter(spatial_pred).items())),
        "true_spatial": dict(sorted(Counter(c.spatial.answer for c in cases).items())),
        "predicted_place": dict(sorted(Counter(p for (q, p) in asked if q is not None).items())),
    }


def main(argv: list[str] | None = None) -> None:
    args = probe_parser(__doc__.split("\n")[0]).parse_args(argv)
    model, tok = load_for_probes(args.model)
    cases = spatial_cases(args.variant, args.seed, args.n)
    spatial_pred = first_tokens(model, tok, [c.spatial for c in cases])
    flat = [q for c in cases for q in c.places]
    asked = first_tokens(model, tok, [q for q in flat if q is not None])
    it = iter(asked)
    place_pred = [next(it) if q is not None else None for q in flat]
    res = {"model": args.model, "variant": args.variant, **summarise(cases, spatial_pred, place_pred)}
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
