"""Method-free statistics of a testbed model: ``python -m zooprune.testbed.validate --help``.

Nothing here prunes or ranks with any pruning method; the statistics describe the model so a
testbed design can be judged before any method's accuracy is looked at (issue 13, item 4):

- per-category token importance: gradient x input of the answer's log-probability w.r.t. each
  projected visual token (``|g . x|``, the share each category holds), and the answer
  log-probability drop when all tokens of one category are removed (category ablation);
- feature geometry of vision features and projected tokens: norm distribution, mean pairwise
  cosine within an image, and the outlier rate (norm above ``OUTLIER_FACTOR`` x the image's
  median norm; where outliers fall, by category); text-embedding norms for comparison;
- projector sensitivity (closed form, :func:`zooprune.methods.estimators.closed_form_sensitivity`)
  per category and its per-image Spearman correlation with importance and with the projected
  norm: *reported*, never a design target.

Categories come from the generator's own labels: v1 ``background / shape / tile / checker /
caption``; v2 ``region`` (the textured background) instead of ``background``.
Intervals are mean +- 1.96 standard errors over images.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, LlavaForConditionalGeneration

from ..methods.estimators import closed_form_sensitivity
from .batches import pixels
from .packing import Packed, Standardize, lm_forward, pack, vision_features
from .scenes import patch_item_ids, render_scene
from .trainkit import token_ids

OUTLIER_FACTOR = 3.0
#: the background categories (v1, v2); everything else is an item.
EMPTY: tuple[str, ...] = ("background", "region")
TOP_SHARE = 0.2


@dataclass
class StatItem:
    """One held-out question with a category name per patch (``categories``: 196 strings)."""

    pixel_values: torch.Tensor
    question: str
    answer: str
    family: str
    categories: np.ndarray


def _categories(scene: dict[str, Any], ids: np.ndarray, empty: str) -> np.ndarray:
    owner = patch_item_ids(ids)
    return np.array([empty if k == 0 else scene["items"][k - 1]["kind"] for k in owner])


def v1_items(seed: int, n: int) -> list[StatItem]:
    """``n`` family-balanced v1 questions of split ``seed`` with patch categories."""
    from .data import make_samples

    out = []
    for s in make_samples(seed, n):
        _, ids = render_scene(s.scene)
        out.append(
            StatItem(pixels(s.image), s.question, s.answer, s.family, _categories(s.scene, ids, "background"))
        )
    return out


def v2_items(seed: int, n: int) -> list[StatItem]:
    """``n`` family-balanced v2 questions of split ``seed`` with patch categories."""
    from .questions_v2 import make_samples_v2

    return [
        StatItem(pixels(s.image), s.question, s.answer, s.family, _categories(s.scene, s.item_ids, "region"))
        for s in make_samples_v2(seed, n)
    ]


# ------------------------------------------------------------------------------ pure helpers
def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant."""

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x), dtype=np.float64)
        r[order] = np.arange(len(x), dtype=np.float64)
        for v in np.unique(x):
            sel = x == v
            if sel.sum() > 1:
                r[sel] = r[sel].mean()
        return r

    ra, rb = ranks(np.asarray(a, dtype=np.float64)), ranks(np.asarray(b, dtype=np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def mean_pairwise_cosine(x: torch.Tensor) -> float:
    """Mean cosine over distinct token pairs of ``x`` [N, d]."""
    u = torch.nn.functional.normalize(x.double(), dim=-1)
    c = u @ u.T
    n = x.shape[0]
    return float((c.sum() - c.diagonal().sum()) / (n * (n - 1)))


def outliers(norms: np.ndarray, factor: float = OUTLIER_FACTOR) -> np.ndarray:
    """Bool mask of tokens whose norm exceeds ``factor`` x the median norm."""
    return norms > factor * np.median(norms)


def minmax(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def interval(values: list[float]) -> dict[str, float]:
    """Mean and a 95 % normal interval over finite ``values``."""
    v = np.array([x for x in values if np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "lo": float(v.mean() - half), "hi": float(v.mean() + half), "n": len(v)}


# ------------------------------------------------------------------------------ per image
def _answer_logprobs(model: LlavaForConditionalGeneration, img: torch.Tensor, p: Packed) -> torch.Tensor:
    la, _, _ = lm_forward(model, img, p)
    return torch.log_softmax(la.float(), -1).gather(1, p.answers[:, None])[:, 0]


def image_stats(
    model: LlavaForConditionalGeneration, tok: Any, item: StatItem, std: Standardize | None = None
) -> dict[str, Any]:
    """Per-token arrays (importance, sensitivity, norms) and per-category ablation drops of one item."""
    ids = token_ids(tok)
    n = item.categories.shape[0]
    proj = model.model.multi_modal_projector
    with torch.no_grad():
        feats = vision_features(model, item.pixel_values[None].to(model.dtype)).float()[0]
        x = std(feats) if std is not None else feats
        tokens = proj.float()(x)
    qa = {
        "q": tok(item.question, add_special_tokens=False)["input_ids"],
        "a": tok.convert_tokens_to_ids(item.answer),
    }
    leaf = tokens.detach().clone().requires_grad_(True)
    logp = _answer_logprobs(model, leaf[None], pack(ids, [(list(range(n)), [qa])]))[0]
    (grad,) = torch.autograd.grad(logp, leaf)
    gxi = (grad * leaf.detach()).sum(-1).numpy()
    cats = sorted(set(item.categories.tolist()))
    rows = [([i for i in range(n) if item.categories[i] != c], [qa]) for c in cats]
    with torch.no_grad():
        abl = _answer_logprobs(model, tokens[None].expand(len(cats), -1, -1), pack(ids, rows))
        sens = closed_form_sensitivity(x, proj).numpy()
    return {
        "categories": item.categories,
        "family": item.family,
        "logp": float(logp.detach()),
        "gxi": gxi,
        "importance": np.abs(gxi),
        "ablation": {c: float(logp.detach()) - float(v) for c, v in zip(cats, abl)},
        "sensitivity": sens,
        "vision_norm": feats.norm(dim=-1).numpy(),
        "token_norm": tokens.norm(dim=-1).numpy(),
        "vision_feats": feats.numpy(),
        "token_feats": tokens.numpy(),
        "vision_cos": mean_pairwise_cosine(feats),
        "token_cos": mean_pairwise_cosine(tokens),
    }


def position_probe(
    per_image: list[dict[str, Any]], ridge: float = 1.0, steps: int = 300, key: str = "vision_feats"
) -> dict[str, dict[str, float]]:
    """Does the vision stage encode where a patch is? Held-out scores of two linear probes.

    From a patch's (standardised) feature ``key`` (``vision_feats``, or ``token_feats``: the
    projected token the LLM reads) to its column / row index: ridge regression
    (``r2_*``: held-out R^2) and a softmax classifier over the 14 indices (``acc_*``: held-out
    accuracy, chance 1/14; full-batch Adam, ``steps`` steps, seed 0). Fitted on the
    even-numbered images, scored on the odd ones, over all patches (``*_all``) and over item
    patches (``*_items``, not background). Needs at least two images.
    """
    grid = int(round(len(per_image[0]["categories"]) ** 0.5))
    pos = np.arange(grid * grid)
    target = {"col": pos % grid, "row": pos // grid}
    fit, test = per_image[0::2], per_image[1::2]
    x_fit = np.concatenate([r[key] for r in fit]).astype(np.float64)
    mu, sd = x_fit.mean(0), x_fit.std(0) + 1e-6
    a_fit = np.c_[(x_fit - mu) / sd, np.ones(len(x_fit))]
    subsets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, pick in (("all", lambda c: np.ones(len(c), bool)), ("items", lambda c: ~np.isin(c, EMPTY))):
        xs, idx = [], []
        for r in test:
            m = pick(r["categories"])
            xs.append(r[key][m])
            idx.append(pos[m])
        subsets[name] = (
            np.c_[(np.concatenate(xs) - mu) / sd, np.ones(sum(len(i) for i in idx))],
            np.concatenate(idx),
        )
    out: dict[str, dict[str, float]] = {}
    for axis, y in target.items():
        yf = np.tile(y, len(fit))
        w = np.linalg.solve(a_fit.T @ a_fit + ridge * np.eye(a_fit.shape[1]), a_fit.T @ yf)
        gen = torch.Generator().manual_seed(0)
        lin = torch.randn(a_fit.shape[1], grid, generator=gen, dtype=torch.float64) * 0.01
        lin.requires_grad_(True)
        opt = torch.optim.Adam([lin], lr=0.05)
        xa, ya = torch.from_numpy(a_fit), torch.from_numpy(yf).long()
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(xa @ lin, ya) + 1e-4 * (lin**2).sum()
            loss.backward()
            opt.step()
        res: dict[str, float] = {}
        for name, (xt, pt) in subsets.items():
            yt = target[axis][pt].astype(np.float64)
            var = ((yt - yt.mean()) ** 2).sum()
            res[f"r2_{name}"] = float(1 - ((yt - xt @ w) ** 2).sum() / var) if var > 0 else float("nan")
            with torch.no_grad():
                pred = (torch.from_numpy(xt) @ lin).argmax(-1).numpy()
            res[f"acc_{name}"] = float((pred == target[axis][pt]).mean()) if len(pt) else float("nan")
        out[axis] = res
    return out


def _square(per_image: list[dict[str, Any]]) -> bool:
    n = len(per_image[0]["categories"])
    return len(per_image) >= 2 and int(round(n**0.5)) ** 2 == n


def summarise(per_image: list[dict[str, Any]], text_norm: float | None = None) -> dict[str, Any]:
    """Aggregate :func:`image_stats` rows into the report (per category and overall)."""
    cats = sorted({c for r in per_image for c in r["categories"].tolist()})
    by_cat: dict[str, dict[str, list[float]]] = {c: {} for c in cats}

    def add(c: str, key: str, v: float) -> None:
        by_cat[c].setdefault(key, []).append(v)

    corr: dict[str, list[float]] = {
        "sens_vs_importance": [],
        "sens_vs_token_norm": [],
        "token_norm_vs_importance": [],
    }
    glob: dict[str, list[float]] = {
        k: [] for k in ("vision_cos", "token_cos", "vision_outliers", "token_outliers")
    }
    fams: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in per_image:
        cat = r["categories"]
        n = len(cat)
        fam = fams.setdefault(r.get("family", "all"), {})
        imp_total = r["importance"].sum()
        top = np.argsort(-r["sensitivity"], kind="stable")[: max(1, round(TOP_SHARE * n))]
        sens01 = minmax(r["sensitivity"])
        vo, to = outliers(r["vision_norm"]), outliers(r["token_norm"])
        for c in set(cat.tolist()):
            m = cat == c
            add(c, "tokens", float(m.sum()))
            add(
                c,
                "importance_share",
                float(r["importance"][m].sum() / imp_total) if imp_total > 0 else float("nan"),
            )
            add(c, "importance_per_token", float(r["importance"][m].mean()))
            add(c, "ablation_drop", r["ablation"][c])
            add(c, "sensitivity_minmax", float(sens01[m].mean()))
            add(c, "share_of_top_sensitive", float(m[top].mean()))
            add(c, "vision_norm", float(r["vision_norm"][m].mean()))
            add(c, "token_norm", float(r["token_norm"][m].mean()))
            add(c, "share_of_vision_outliers", float(m[vo].mean()) if vo.any() else float("nan"))
            fc = fam.setdefault(c, {"importance_share": [], "ablation_drop": []})
            fc["importance_share"].append(by_cat[c]["importance_share"][-1])
            fc["ablation_drop"].append(r["ablation"][c])
        corr["sens_vs_importance"].append(spearman(r["sensitivity"], r["importance"]))
        corr["sens_vs_token_norm"].append(spearman(r["sensitivity"], r["token_norm"]))
        corr["token_norm_vs_importance"].append(spearman(r["token_norm"], r["importance"]))
        glob["vision_cos"].append(r["vision_cos"])
        glob["token_cos"].append(r["token_cos"])
        glob["vision_outliers"].append(float(vo.mean()))
        glob["token_outliers"].append(float(to.mean()))
    vn = np.concatenate([r["vision_norm"] for r in per_image])
    tn = np.concatenate([r["token_norm"] for r in per_image])
    q = [0.01, 0.25, 0.5, 0.75, 0.99]
    return {
        "images": len(per_image),
        "categories": {c: {k: interval(v) for k, v in d.items()} for c, d in by_cat.items()},
        "spearman": {k: interval(v) for k, v in corr.items()},
        "geometry": {k: interval(v) for k, v in glob.items()},
        "by_family": {
            f: {c: {k: interval(v) for k, v in d.items()} for c, d in sorted(per.items())}
            for f, per in sorted(fams.items())
        },
        "vision_norm_quantiles": dict(zip(map(str, q), np.quantile(vn, q).round(4).tolist())),
        "token_norm_quantiles": dict(zip(map(str, q), np.quantile(tn, q).round(4).tolist())),
        "position_probe_vision": position_probe(per_image) if _square(per_image) else None,
        "position_probe_tokens": position_probe(per_image, key="token_feats") if _square(per_image) else None,
        "text_embedding_norm": text_norm,
        "outlier_factor": OUTLIER_FACTOR,
        "top_share": TOP_SHARE,
    }


def validate(
    model: LlavaForConditionalGeneration, tok: Any, items: list[StatItem], std: Standardize | None = None
) -> dict[str, Any]:
    """Every statistic above over ``items`` (float32, eval mode)."""
    model.eval()
    rows = [image_stats(model, tok, it, std) for it in items]
    emb = model.model.language_model.embed_tokens.weight.detach().float()
    return summarise(rows, float(emb.norm(dim=-1).mean()))


def format_report(rep: dict[str, Any]) -> str:
    """A markdown summary of :func:`summarise`'s output."""

    def f(iv: dict[str, float]) -> str:
        return f"{iv['mean']:.3f} [{iv['lo']:.3f}, {iv['hi']:.3f}]"

    cols = (
        "tokens", "importance_share", "ablation_drop", "sensitivity_minmax", "share_of_top_sensitive",
        "vision_norm", "token_norm", "share_of_vision_outliers",
    )  # fmt: skip
    lines = [
        f"{rep['images']} images; mean [95 % interval] over images",
        "",
        "| category | " + " | ".join(cols) + " |",
    ]
    lines.append("|---" * (len(cols) + 1) + "|")
    for c, d in rep["categories"].items():
        lines.append(f"| {c} | " + " | ".join(f(d[k]) for k in cols) + " |")
    lines.append("")
    cats = list(rep["categories"])
    lines.append("Share of |gradient x input| (ablation drop) per question family:")
    lines.append("")
    lines.append("| family | " + " | ".join(cats) + " |")
    lines.append("|---" * (len(cats) + 1) + "|")
    for fam, per in rep["by_family"].items():
        cells = [
            f"{per[c]['importance_share']['mean']:.2f} ({per[c]['ablation_drop']['mean']:+.2f})"
            if c in per
            else "-"
            for c in cats
        ]
        lines.append(f"| {fam} | " + " | ".join(cells) + " |")
    lines.append("")
    for k, iv in {**rep["spearman"], **rep["geometry"]}.items():
        lines.append(f"- {k}: {f(iv)}")
    lines.append(f"- vision norm quantiles: {rep['vision_norm_quantiles']}")
    lines.append(f"- token norm quantiles: {rep['token_norm_quantiles']}")
    lines.append(f"- mean text-embedding norm: {rep['text_embedding_norm']:.3f}")
    for key in ("vision", "tokens"):
        probe = rep["position_probe_" + key]
        lines.append(f"- position probe on {key} (held-out R^2 / accuracy, chance 1/14): {probe}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m zooprune.testbed.validate", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--model", default="models/testbed-llava", help="an exported testbed model dir")
    ap.add_argument(
        "--variant", choices=("v1", "v2"), default="v1", help="which generator asks the questions"
    )
    ap.add_argument(
        "--seed", type=int, default=None, help="held-out split (default: the variant's eval seed)"
    )
    ap.add_argument("--n", type=int, default=96, help="questions (family-balanced)")
    ap.add_argument("--out", default=None, help="write the JSON report here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = LlavaForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32)
    model.set_attn_implementation("eager")
    tok = AutoTokenizer.from_pretrained(args.model)
    if args.variant == "v1":
        from .data import EVAL_SEED

        items = v1_items(EVAL_SEED if args.seed is None else args.seed, args.n)
    else:
        from .questions_v2 import EVAL_SEED_V2

        items = v2_items(EVAL_SEED_V2 if args.seed is None else args.seed, args.n)
    rep = validate(model, tok, items)
    print(format_report(rep))
    if args.out:
        Path(args.out).write_text(json.dumps(rep, indent=1))


if __name__ == "__main__":
    main()
