"""What does a v2 testbed vision tower encode per patch? Held-out linear probes on its features.

For ``--images`` held-out v2 scenes, each patch's vision feature (the layer the LLM reads) is
labelled with: its column and row (every patch), its background region's colour and texture
(patches no item covers), the colour and the shape of the shape covering it (shape patches) and
the tile's digit (tile patches). A softmax linear probe per target is fitted on the even images
and scored on the odd ones; each score comes with the majority-class rate of the test patches
(what a probe that learned nothing would get). No question, no LLM, no pruning method.

    .venv/bin/python benchmarks/testbed_feature_probes.py --model models/testbed-llava-v2 \
        --model runs/testbed-v2-r3/model-clip --out benchmarks/results/testbed_v2_feature_probes.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from transformers import LlavaForConditionalGeneration

from zooprune.testbed.batches import pixels
from zooprune.testbed.packing import vision_features
from zooprune.testbed.questions_v2 import EVAL_SEED_V2
from zooprune.testbed.scenes import GRID, patch_item_ids
from zooprune.testbed.scenes_v2 import make_scene_v2, patch_regions, render_scene_v2

TARGETS = ("column", "row", "region_colour", "region_texture", "shape_colour", "shape_kind", "digit")


def patch_labels(seed: int, n: int) -> tuple[torch.Tensor, list[dict[str, np.ndarray]]]:
    """Pixels [n, 3, 224, 224] and per image, per target, a label per patch ("" = not that kind)."""
    px, labels = [], []
    pos = np.arange(GRID * GRID)
    for i in range(n):
        scene = make_scene_v2(np.random.default_rng([seed, i, 7]))
        image, ids = render_scene_v2(scene)
        px.append(pixels(image))
        owner = patch_item_ids(ids)
        regions = patch_regions(scene)
        lab = {t: np.full(GRID * GRID, "", dtype=object) for t in TARGETS}
        lab["column"][:] = (pos % GRID).astype(str)
        lab["row"][:] = (pos // GRID).astype(str)
        for p in pos:
            if owner[p] == 0:
                reg = scene["regions"][regions[p]]
                lab["region_colour"][p], lab["region_texture"][p] = reg["colour"], reg["texture"]
                continue
            it = scene["items"][owner[p] - 1]
            if it["kind"] == "shape":
                lab["shape_colour"][p], lab["shape_kind"][p] = it["colour"], it["shape"]
            elif it["kind"] == "tile":
                lab["digit"][p] = it["text"]
        labels.append(lab)
    return torch.stack(px), labels


def linear_probe(x_fit, y_fit, x_test, y_test, steps: int = 300) -> dict[str, float]:
    """Held-out accuracy of a softmax probe (full-batch Adam, seed 0) and the majority rate."""
    classes = sorted(set(y_fit) | set(y_test))
    idx = {c: k for k, c in enumerate(classes)}
    mu, sd = x_fit.mean(0), x_fit.std(0) + 1e-6
    xf = torch.from_numpy(np.c_[(x_fit - mu) / sd, np.ones(len(x_fit))])
    xt = torch.from_numpy(np.c_[(x_test - mu) / sd, np.ones(len(x_test))])
    yf = torch.tensor([idx[c] for c in y_fit])
    yt = np.array([idx[c] for c in y_test])
    w = (torch.randn(xf.shape[1], len(classes), generator=torch.Generator().manual_seed(0)) * 0.01).double()
    w.requires_grad_(True)
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xf @ w, yf) + 1e-4 * (w**2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = (xt @ w).argmax(-1).numpy()
    fit_major = idx[max(set(y_fit), key=list(y_fit).count)]
    return {
        "acc": float((pred == yt).mean()),
        "majority": float((yt == fit_major).mean()),
        "n_test": len(yt),
    }


def probe_model(path: str, px: torch.Tensor, labels: list[dict[str, np.ndarray]]) -> dict[str, dict]:
    """Every target's held-out probe score on the tower of the exported model at ``path``."""
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        feats = torch.cat([vision_features(model, px[s : s + 32]) for s in range(0, len(px), 32)]).numpy()
    out = {}
    for t in TARGETS:
        parts = {"fit": ([], []), "test": ([], [])}
        for i, lab in enumerate(labels):
            m = lab[t] != ""
            xs, ys = parts["fit" if i % 2 == 0 else "test"]
            xs.append(feats[i][m])
            ys.extend(lab[t][m].tolist())
        (xf, yf), (xt, yt) = [(np.concatenate(p[0]).astype(np.float64), p[1]) for p in parts.values()]
        out[t] = linear_probe(xf, yf, xt, yt)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, help="an exported v2 model (repeatable)")
    ap.add_argument("--images", type=int, default=160, help="held-out scenes (half fit, half test)")
    ap.add_argument("--seed", type=int, default=EVAL_SEED_V2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    px, labels = patch_labels(args.seed, args.images)
    res = {m: probe_model(m, px, labels) for m in args.model}
    print(f"{'target':<16}" + "".join(f"{m[-28:]:>32}" for m in args.model))
    for t in TARGETS:
        cells = [f"{res[m][t]['acc']:.2f} (majority {res[m][t]['majority']:.2f})" for m in args.model]
        print(f"{t:<16}" + "".join(f"{c:>32}" for c in cells))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"images": args.images, "seed": args.seed, "probes": res}, f, indent=1)


if __name__ == "__main__":
    main()
