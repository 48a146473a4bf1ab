"""Time SADS selection (paper Eqs. 6-7, ``zooprune.methods.zoo.select``) at LLaVA-1.5 and LLaVA-NeXT sizes.

Cases: 64 of 576 tokens and 320 of 2880 tokens, d = 4096 (projected tokens of a 7B model),
float32 on CPU. Besides the library's ``select`` (full N x N cosine-distance matrix, then a
running minimum), a prototype that computes only the k rows of distances it needs (one
matrix-vector product per pick: k N d instead of N^2 d multiply-adds, same picks) is timed to
show where the cost goes. The analytic floor (multiply-adds and bytes read) is written next to
the measurements.

Run: python benchmarks/sads_timing.py [--repeats 5] -> benchmarks/results/sads_timing.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from zooprune.methods.zoo import normalize_scores, select

CASES = [(576, 64), (2880, 320)]


@torch.no_grad()
def select_rows_only(projected: Tensor, scores: Tensor, k: int) -> Tensor:
    """SADS with distances from each new pick only: ``(N, d)``, ``(N,)`` -> ``(k,)`` sorted indices.

    Same greedy rule as ``zoo.select`` (first pick argmax S^, then argmax S^ * min-distance).
    """
    z = F.normalize(projected.float(), dim=-1)  # (N, d)
    weight = normalize_scores(scores.float())  # (N,)
    n = z.shape[0]
    picked = torch.zeros(n, dtype=torch.bool)
    chosen = torch.empty(k, dtype=torch.long)
    min_dist = torch.full((n,), float("inf"))
    nxt = int(weight.argmax())
    for t in range(k):
        chosen[t] = nxt
        picked[nxt] = True
        min_dist = torch.minimum(min_dist, 1.0 - z @ z[nxt])  # (N,) one GEMV per pick
        if t + 1 < k:
            nxt = int((weight * min_dist).masked_fill(picked, float("-inf")).argmax())
    return chosen.sort().values


def median_ms(fn, repeats: int) -> float:
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
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "sads_timing.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    rows = []
    for n, k in CASES:
        z = torch.randn(n, args.dim, generator=g) + 0.5 * torch.randn(
            args.dim, generator=g
        )  # shared component
        scores = torch.rand(n, generator=g)
        same = bool(torch.equal(select(z, scores, k), select_rows_only(z, scores, k)))
        lib = median_ms(lambda z=z, s=scores, k=k: select(z, s, k), args.repeats)
        rows_only = median_ms(lambda z=z, s=scores, k=k: select_rows_only(z, s, k), args.repeats)
        row = {
            "N": n,
            "k": k,
            "d": args.dim,
            "select_ms": round(lib, 2),
            "rows_only_prototype_ms": round(rows_only, 2),
            "same_picks": same,
            "full_matrix_gmacs": round(n * n * args.dim / 1e9, 2),
            "rows_only_gmacs": round(k * n * args.dim / 1e9, 2),
            "rows_only_bytes_read_gb": round(k * n * args.dim * 4 / 1e9, 2),
        }
        rows.append(row)
        print(row, flush=True)
    meta = {
        "torch": torch.__version__,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "dtype": "float32",
        "note": "median of repeats after one warm-up; random projected tokens with a shared component",
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
