"""Which sensitivity estimator should ZOO-Prune use by default? Agreement, accuracy and cost.

Part 1 (random LLaVA-1.5-shaped projectors, 1024 -> 4096 -> 4096, GELU): for each estimator
(central m=64 reference with seed 0; central m=64 with another seed = the Monte-Carlo noise
ceiling; central m=16, 8; jvp m=64, 16, 8; closed-form) the Spearman rank correlation of its
scores with the reference, the overlap of the tokens kept at 64/576 by SADS (zoo) and by top-k
sensitivity (zoo-sensitivity), milliseconds per image and multiply-adds. Features imitate CLIP
ViT-L/14 penultimate-layer statistics: a large component shared by every token, smooth
low-rank content over the 24 x 24 grid, a few massive-activation channels, log-normal token
norms and ~2 % high-norm artifact tokens. Optionally (--truth-directions M) every estimator is
also compared with E||J u|| estimated by jvp with M directions (the quantity the paper targets).

Part 2 (--testbed PATH): accuracy of zoo per estimator on the embedded testbed model (trained
projector), relative to the unpruned model, through the evaluation API of ``zooprune eval``.

Run: python benchmarks/estimator_study.py [--projectors 2 --images 2] [--testbed models/testbed-llava]
Writes benchmarks/results/estimator_study.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zooprune.bench.flops import estimator_flops
from zooprune.methods.estimators import estimate_sensitivity, projector_kernel
from zooprune.methods.zoo import select

RESULTS = Path(__file__).parent / "results"
#: (label, estimator, m, direction seed); the first is the reference.
ESTIMATORS = [
    ("central m=64 (reference)", "central", 64, 0),
    ("central m=64, other seed", "central", 64, 1),
    ("central m=16", "central", 16, 0),
    ("central m=8", "central", 8, 0),
    ("jvp m=64", "jvp", 64, 0),
    ("jvp m=16", "jvp", 16, 0),
    ("jvp m=8", "jvp", 8, 0),
    ("closed-form", "closed-form", 0, 0),
]


def llava_projector(d_v: int, h: int, d_l: int, seed: int) -> nn.Module:
    """Linear(d_v, h) -> GELU -> Linear(h, d_l) with Gaussian weights (W1 ~ N(0, 1/d_v), b1 ~ N(0, 0.5^2))."""
    g = torch.Generator().manual_seed(1000 + seed)
    proj = nn.Sequential(nn.Linear(d_v, h), nn.GELU(), nn.Linear(h, d_l)).eval()
    with torch.no_grad():
        proj[0].weight.copy_(torch.randn(h, d_v, generator=g) / d_v**0.5)
        proj[0].bias.copy_(0.5 * torch.randn(h, generator=g))
        proj[2].weight.copy_(torch.randn(d_l, h, generator=g) / h**0.5)
        proj[2].bias.copy_(0.02 * torch.randn(d_l, generator=g))
    return proj


def clip_like_features(n: int, d: int, seed: int) -> Tensor:
    """``(n, d)`` features with CLIP-penultimate-like structure (see module doc); n must be a square."""
    g = torch.Generator().manual_seed(2000 + seed)
    side = int(n**0.5)
    shared = torch.randn(d, generator=g)  # one large component in every token (unit RMS per channel)
    rank = 32
    basis = torch.randn(rank, d, generator=g) / rank**0.5
    field = torch.randn(1, rank, side, side, generator=g)
    field = nn.functional.avg_pool2d(
        field, 5, stride=1, padding=2, count_include_pad=False
    )  # smooth over the grid
    content = 2.0 * field.flatten(2)[0].T @ basis  # (n, d) low-rank, spatially correlated
    noise = 0.3 * torch.randn(n, d, generator=g)
    scale = torch.exp(0.3 * torch.randn(n, 1, generator=g))  # log-normal token norms
    x = shared + scale * (content + noise)
    massive = torch.randperm(d, generator=g)[:4]
    x[:, massive] += 15.0 * torch.sign(torch.randn(4, generator=g))  # massive-activation channels
    artifacts = torch.randperm(n, generator=g)[: max(1, n // 50)]
    x[artifacts] *= 4.0  # high-norm artifact tokens
    return x


def ranks(x: Tensor) -> Tensor:
    return x.argsort().argsort().double()


def spearman(a: Tensor, b: Tensor) -> float:
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / (ra.norm() * rb.norm()))


def overlap(a: Tensor, b: Tensor) -> float:
    return len(set(a.tolist()) & set(b.tolist())) / max(1, a.numel())


def timed_scores(x: Tensor, proj: nn.Module, name: str, m: int, seed: int) -> tuple[Tensor, float]:
    start = time.perf_counter()
    scores = estimate_sensitivity(
        x, proj, name, num_directions=max(1, m), generator=torch.Generator().manual_seed(seed)
    )
    return scores, (time.perf_counter() - start) * 1e3


def agreement(args: argparse.Namespace) -> dict[str, Any]:
    d_v, h, d_l = args.widths
    per: dict[str, dict[str, list[float]]] = {label: {} for label, *_ in ESTIMATORS}
    kernel_ms, select_ms = [], []
    for p in range(args.projectors):
        proj = llava_projector(d_v, h, d_l, p)
        start = time.perf_counter()
        projector_kernel(proj)
        kernel_ms.append((time.perf_counter() - start) * 1e3)
        for i in range(args.images):
            x = clip_like_features(args.tokens, d_v, 100 * p + i)
            with torch.no_grad():
                z = proj(x)
            outputs = {}
            for label, name, m, seed in ESTIMATORS:
                scores, ms = timed_scores(x, proj, name, m, seed)
                start = time.perf_counter()
                kept = select(z, scores, args.keep)
                select_ms.append((time.perf_counter() - start) * 1e3)
                outputs[label] = (scores, kept, scores.topk(args.keep).indices)
                per[label].setdefault("ms", []).append(ms)
                print(f"projector {p} image {i} {label:<26} {ms:9.1f} ms", flush=True)
            ref_scores, ref_kept, ref_top = outputs[ESTIMATORS[0][0]]
            truth = None
            if args.truth_directions:
                truth = estimate_sensitivity(
                    x,
                    proj,
                    "jvp",
                    num_directions=args.truth_directions,
                    generator=torch.Generator().manual_seed(7),
                )
            for label, (scores, kept, top) in outputs.items():
                stats = per[label]
                stats.setdefault("spearman", []).append(spearman(scores, ref_scores))
                stats.setdefault("overlap_sads", []).append(overlap(kept, ref_kept))
                stats.setdefault("overlap_topk", []).append(overlap(top, ref_top))
                stats.setdefault("scale_vs_reference", []).append(float((scores / ref_scores).mean()))
                if truth is not None:
                    stats.setdefault("spearman_truth", []).append(spearman(scores, truth))
    rows = []
    for label, name, m, _seed in ESTIMATORS:
        s = per[label]
        row = {
            "estimator": label,
            "name": name,
            "num_directions": m or None,
            "spearman_mean": round(statistics.mean(s["spearman"]), 4),
            "spearman_min": round(min(s["spearman"]), 4),
            "overlap_sads_mean": round(statistics.mean(s["overlap_sads"]), 4),
            "overlap_sads_min": round(min(s["overlap_sads"]), 4),
            "overlap_topk_mean": round(statistics.mean(s["overlap_topk"]), 4),
            "scale_vs_reference": round(statistics.mean(s["scale_vs_reference"]), 4),
            "ms_median": round(statistics.median(s["ms"]), 1),
            "gmacs": round(estimator_flops(name, args.tokens, d_v, h, d_l, max(1, m)) / 1e9, 2),
        }
        if "spearman_truth" in s:
            row["spearman_vs_truth_mean"] = round(statistics.mean(s["spearman_truth"]), 4)
        rows.append(row)
    return {
        "rows": rows,
        "closed_form_kernel_ms_median": round(statistics.median(kernel_ms), 1),
        "select_ms_median": round(statistics.median(select_ms), 2),
        "trials": args.projectors * args.images,
    }


def testbed_agreement(vlm: Any, items: list[Any], keep: float) -> list[dict[str, Any]]:
    """Spearman and kept-set overlap with central m=64 on the testbed model's own features and projector."""
    from zooprune.config import resolve_budget

    projector = vlm.adapter.float32_projector()
    stats: dict[str, dict[str, list[float]]] = {label: {} for label, *_ in ESTIMATORS}
    for item in items:
        inputs = vlm.encode_inputs([item.image], [item.question])
        with torch.no_grad():
            image = vlm.adapter.encode(inputs["pixel_values"], frozenset({"features", "projector"}))[0]
        x, z = image.features.float(), image.projected.float()
        k = resolve_budget(keep, x.shape[0])
        outputs = {}
        for label, name, m, seed in ESTIMATORS:
            scores, ms = timed_scores(x, projector, name, m, seed)
            outputs[label] = (scores, select(z, scores, k), scores.topk(k).indices, ms)
        ref_scores, ref_kept, ref_top, _ = outputs[ESTIMATORS[0][0]]
        for label, (scores, kept, top, ms) in outputs.items():
            stats[label].setdefault("spearman", []).append(spearman(scores, ref_scores))
            stats[label].setdefault("overlap_sads", []).append(overlap(kept, ref_kept))
            stats[label].setdefault("overlap_topk", []).append(overlap(top, ref_top))
            stats[label].setdefault("ms", []).append(ms)
    return [
        {
            "estimator": label,
            "spearman_mean": round(statistics.mean(s["spearman"]), 4),
            "overlap_sads_mean": round(statistics.mean(s["overlap_sads"]), 4),
            "overlap_topk_mean": round(statistics.mean(s["overlap_topk"]), 4),
            "ms_median": round(statistics.median(s["ms"]), 2),
        }
        for label, s in stats.items()
    ]


def testbed_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    """zoo accuracy per estimator on the testbed (held-out generated questions), relative to unpruned."""
    from zooprune.eval.cache import PredictionCache
    from zooprune.eval.data import generated_items
    from zooprune.eval.runner import evaluate
    from zooprune.testbed import EVAL_SEED
    from zooprune.vlm import load

    items = generated_items(EVAL_SEED, args.testbed_samples)
    work = Path(args.testbed_work)
    out: dict[str, Any] = {"model": str(args.testbed), "num_samples": len(items), "keeps": args.testbed_keeps}
    vlm = load(args.testbed, method="none")
    out["agreement_images"] = min(len(items), args.testbed_agreement_images)
    out["agreement"] = testbed_agreement(vlm, items[: out["agreement_images"]], args.testbed_keeps[0])
    settings = {"model": str(args.testbed), "seed": EVAL_SEED, "n": len(items)}
    base = evaluate(
        vlm, items, ["none"], [1.0], PredictionCache(work / "none.jsonl", settings), progress=False
    )
    out["unpruned_accuracy"] = base[0]["accuracy"]
    rows = []
    for label, name, m, _seed in [e for e in ESTIMATORS if e[0] in args.testbed_estimators]:
        options = {"estimator": name, "num_directions": max(1, m)}
        vlm.configure(**options)
        cache = PredictionCache(work / f"{name}-{m}.jsonl", {**settings, **options})
        start = time.perf_counter()
        summaries = evaluate(vlm, items, ["zoo"], args.testbed_keeps, cache, progress=False)
        seconds = time.perf_counter() - start
        for s in summaries:
            rows.append(
                {
                    "estimator": label,
                    "keep": s["keep"],
                    "accuracy": round(s["accuracy"], 4),
                    "relative": round(100 * s["accuracy"] / out["unpruned_accuracy"], 2)
                    if out["unpruned_accuracy"]
                    else None,
                    "kept_tokens": s["mean_kept_tokens"],
                }
            )
        print(
            f"testbed {label}: {[r['accuracy'] for r in rows if r['estimator'] == label]} ({seconds:.0f} s)",
            flush=True,
        )
    out["rows"] = rows
    return out


def markdown(report: dict[str, Any]) -> str:
    a = report["agreement"]
    lines = [
        f"Agreement with central m=64 (seed 0, float32) on {a['trials']} random LLaVA-1.5-shaped projector x image "
        f"trials ({report['meta']['tokens']} tokens, keep {report['meta']['keep']}); {report['meta']['threads']} CPU threads.",
        "",
        "| estimator | Spearman (mean / min) | SADS kept overlap (mean / min) | top-k overlap | scale vs ref | ms / image | GMACs |"
        + (" Spearman vs E‖Ju‖ |" if "spearman_vs_truth_mean" in a["rows"][0] else ""),
        "|---|---|---|---|---|---|---|" + ("---|" if "spearman_vs_truth_mean" in a["rows"][0] else ""),
    ]
    for r in a["rows"]:
        line = (
            f"| {r['estimator']} | {r['spearman_mean']:.3f} / {r['spearman_min']:.3f} | "
            f"{r['overlap_sads_mean']:.3f} / {r['overlap_sads_min']:.3f} | {r['overlap_topk_mean']:.3f} | "
            f"{r['scale_vs_reference']:.4f} | {r['ms_median']:.1f} | {r['gmacs']:.1f} |"
        )
        if "spearman_vs_truth_mean" in r:
            line += f" {r['spearman_vs_truth_mean']:.3f} |"
        lines.append(line)
    lines += [
        "",
        f"closed-form K build (once per projector): {a['closed_form_kernel_ms_median']} ms; SADS select: {a['select_ms_median']} ms",
    ]
    if "testbed" in report:
        t = report["testbed"]
        lines += [
            "",
            f"Testbed ({t['model']}, {t['num_samples']} held-out questions), unpruned accuracy {t['unpruned_accuracy']:.3f}:",
            "",
            "| estimator | keep | accuracy | Rel. % |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['estimator']} | {r['keep']} | {r['accuracy']:.3f} | {r['relative']} |" for r in t["rows"]
        ]
        lines += [
            "",
            f"Testbed agreement with central m=64 ({t['agreement_images']} images, keep {t['keeps'][0]}):",
            "",
            "| estimator | Spearman | SADS kept overlap | top-k overlap | ms / image |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['estimator']} | {r['spearman_mean']:.3f} | {r['overlap_sads_mean']:.3f} | "
            f"{r['overlap_topk_mean']:.3f} | {r['ms_median']} |"
            for r in t["agreement"]
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--widths", type=int, nargs=3, default=[1024, 4096, 4096], metavar=("D_V", "H", "D_L")
    )
    parser.add_argument("--tokens", type=int, default=576)
    parser.add_argument("--keep", type=int, default=64)
    parser.add_argument("--projectors", type=int, default=2)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument(
        "--truth-directions", type=int, default=0, help="also compare with jvp at this m (0: off)"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--testbed", default=None, help="testbed model folder for part 2 (default: skip)")
    parser.add_argument("--testbed-samples", type=int, default=200)
    parser.add_argument("--testbed-agreement-images", type=int, default=20)
    parser.add_argument("--testbed-keeps", type=float, nargs="+", default=[0.111, 0.056])
    parser.add_argument(
        "--testbed-estimators",
        nargs="+",
        default=["central m=64 (reference)", "central m=8", "jvp m=16", "closed-form"],
    )
    parser.add_argument("--testbed-work", default="runs/estimator_study")
    parser.add_argument(
        "--skip-agreement", action="store_true", help="only part 2 (keeps part 1 from --output)"
    )
    parser.add_argument("--output", default=str(RESULTS / "estimator_study.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = Path(args.output)
    previous = json.loads(out.read_text()) if out.exists() else {}
    report: dict[str, Any] = {
        "meta": {
            "widths": args.widths,
            "tokens": args.tokens,
            "keep": args.keep,
            "threads": args.threads,
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "dtype": "float32",
            "note": "random Gaussian projector weights, CLIP-like synthetic features (see script doc); "
            "ms = one call per trial, median over trials",
        }
    }
    report["agreement"] = (
        previous["agreement"] if args.skip_agreement and "agreement" in previous else agreement(args)
    )
    if args.testbed:
        report["testbed"] = testbed_accuracy(args)
    elif "testbed" in previous:
        report["testbed"] = previous["testbed"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
