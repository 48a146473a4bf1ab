"""Time ZOO-Prune scoring (sensitivity) and SADS selection on LLaVA-shaped random tensors (CPU, float32).

Shapes: LLaVA-1.5 (N=576 tokens, keep 64) and LLaVA-NeXT (N=2880, keep 320); projector
Linear(1024 -> 4096) -> GELU -> Linear(4096 -> 4096), as in llava-1.5-7b. Prints a table and
writes JSON. Run: python benchmarks/scoring_selection.py [--num-directions 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from zooprune.methods.estimators import estimate_sensitivity
from zooprune.methods.zoo import select

CASES = [(576, 64), (2880, 320)]


def llava_projector(d_v: int = 1024, d_l: int = 4096) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d_v, d_l), nn.GELU(), nn.Linear(d_l, d_l)).eval()


def median_ms(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-directions", type=int, nargs="+", default=[64, 8], help="m for central / jvp")
    parser.add_argument("--estimators", nargs="+", default=["central", "closed-form"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "scoring_selection.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    proj = llava_projector()
    rows = []
    for n, k in CASES:
        x = torch.randn(n, 1024)
        with torch.no_grad():
            z = proj(x)
        scores = torch.rand(n)
        select_ms = median_ms(lambda z=z, s=scores, k=k: select(z, s, k), max(args.repeats, 5))
        for est in args.estimators:
            for m in args.num_directions if est != "closed-form" else [0]:

                def score(x=x, m=m, est=est) -> None:
                    g = torch.Generator().manual_seed(0)
                    estimate_sensitivity(x, proj, est, num_directions=max(m, 1), generator=g)

                score_ms = median_ms(score, args.repeats, args.warmup)
                rows.append(
                    {
                        "N": n,
                        "k": k,
                        "estimator": est,
                        "num_directions": m or None,
                        "score_ms": round(score_ms, 1),
                        "select_ms": round(select_ms, 2),
                    }
                )
                print(
                    f"N={n:5d} k={k:4d} {est:>11s} m={m:3d}  score {score_ms:10.1f} ms   select {select_ms:8.2f} ms",
                    flush=True,
                )
    meta = {
        "torch": torch.__version__,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "dtype": "float32",
        "repeats": args.repeats,
        "note": "median of repeats after one warm-up; projector 1024->4096->4096 (llava-1.5-7b widths)",
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
