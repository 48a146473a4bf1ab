"""Why is multiple choice at chance? Ask each held-out choice question twice, with and without options.

For ``--n`` multiple-choice questions of a held-out testbed split, the model answers the choice
question (a letter) and the same question without its options (the attribute itself, e.g. a
colour). If the letter is right about as often when the attribute is right as when it is wrong,
the model finds the attribute but cannot map it to its letter (a text-side failure, not vision).
Also reported: how the predicted letters are spread over A-D (a constant letter is a prior), and
the accuracy on held-out text-only letter lookups (``stream_v2.choice_drill``, the value named in
the question) asked about the same images: can the model do the lookup at all?
No pruning method is involved. Teacher-forced first answer token, as in training validation.

    .venv/bin/python benchmarks/testbed_choice_probe.py --model models/testbed-llava-v2 --variant v2
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from zooprune.eval.stats import wilson_interval
from zooprune.testbed.batches import pixels
from zooprune.testbed.evaluate import ValItem, first_tokens, held_out_family, load_for_probes, probe_parser
from zooprune.testbed.questions import answer_from_scene, question_text
from zooprune.testbed.stream_v2 import choice_drill

DRILL_SEED = 1235  # held out: training drills draw from the training seeds (>= 2,000,000)


def choice_pairs(variant: str, seed: int | None, n: int) -> list[tuple[ValItem, ValItem]]:
    """(choice question, the same question without options) for up to ``n`` held-out scenes."""
    out = []
    for s in held_out_family(variant, "choice", seed, n):
        plain = dict(s.spec, family="attribute")
        px = pixels(s.image)
        attr = ValItem(px, question_text(plain), answer_from_scene(s.scene, plain), "attribute")
        out.append((ValItem(px, s.question, s.answer, "choice"), attr))
    return out


def main(argv: list[str] | None = None) -> None:
    args = probe_parser(__doc__.split("\n")[0]).parse_args(argv)
    model, tok = load_for_probes(args.model)
    pairs = choice_pairs(args.variant, args.seed, args.n)
    pc = first_tokens(model, tok, [c for c, _ in pairs])
    pa = first_tokens(model, tok, [a for _, a in pairs])
    drills = []
    for i, (c, _) in enumerate(pairs):
        q, a = choice_drill(np.random.default_rng([DRILL_SEED, 77, i]))
        drills.append(ValItem(c.pixel_values, q, a, "drill"))
    pd = first_tokens(model, tok, drills)
    drill_ok = np.array([p == d.answer for p, d in zip(pd, drills)])
    choice_ok = np.array([p == c.answer for p, (c, _) in zip(pc, pairs)])
    attr_ok = np.array([p == a.answer for p, (_, a) in zip(pa, pairs)])

    def cell(mask: np.ndarray) -> dict[str, float]:
        k, m = int(choice_ok[mask].sum()), int(mask.sum())
        lo, hi = wilson_interval(k, m) if m else (float("nan"), float("nan"))
        return {"n": m, "choice_acc": k / m if m else float("nan"), "ci95": [lo, hi]}

    res = {
        "model": args.model,
        "variant": args.variant,
        "n": len(pairs),
        "attribute_acc": float(attr_ok.mean()),
        "choice_acc": float(choice_ok.mean()),
        "choice_given_attribute_right": cell(attr_ok),
        "choice_given_attribute_wrong": cell(~attr_ok),
        "lookup_drill": {"n": len(drills), "acc": float(drill_ok.mean()),
                         "ci95": list(wilson_interval(int(drill_ok.sum()), len(drills)))},
        "predicted_letters": dict(sorted(Counter(pc).items())),
        "true_letters": dict(sorted(Counter(c.answer for c, _ in pairs).items())),
    }
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
