"""Cost growth: a pre-LLM method's scoring and selection time against the number of visual tokens N.

At each N the method runs on ``N`` random pre-projector features ``(N, d_v)`` (seeded), their
projection through the model's own float32 projector ``(N, d_l)``, and ``k = max(1, int(ratio * N))``
(a fixed ratio, 11.1 % by default: 64 of 576, 320 of 2,880). Scoring and selection are the
method's own phase timings (``Selection.timings``), medians over ``repeats`` after one warm-up
call; on CUDA the whole call is synchronised. Token values do not change the work of these
methods (SADS runs k greedy steps over N tokens whatever they hold), so random features time
them faithfully. Methods needing more than features and the projector (vision attention,
keys, grids, the prompt) and in-LLM methods are skipped, with the reason.

``exponent``: the slope of log(ms) against log(N) between the smallest and the largest N (2 for
an O(N^2) cost at a fixed ratio, e.g. SADS's k N d distance rows with k proportional to N).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch

from ..methods import PruneContext, get_method
from ..vlm import PrunedVLM
from .runner import Case, synchronize

GROWTH_NEEDS = frozenset({"features", "projector"})


def growth_cases(cases: list[Case]) -> tuple[list[Case], dict[str, str]]:
    """The cases whose method can be timed on features alone, and why the others are skipped."""
    kept, skipped = [], {}
    for case in cases:
        spec = get_method(case.method)
        if not spec.prunes:
            continue
        if spec.in_llm:
            skipped[case.label] = "in-LLM: selects inside the prefill (see its LM prefill in the table)"
        elif not spec.needs <= GROWTH_NEEDS:
            skipped[case.label] = f"needs {', '.join(sorted(spec.needs - GROWTH_NEEDS))} from the model"
        elif all(c.method != case.method or c.estimator != case.estimator for c in kept):
            kept.append(case)
    return kept, skipped


@torch.no_grad()
def cost_growth(
    vlm: PrunedVLM, cases: list[Case], ns: list[int], ratio: float = 0.111, repeats: int = 3, seed: int = 0
) -> dict[str, Any]:
    """Scoring and selection ms of each case's method at each N (see the module docstring)."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"growth ratio must be in (0, 1], got {ratio}")
    if any(n < 2 for n in ns):
        raise ValueError(f"growth N must be >= 2, got {ns}")
    timed_cases, skipped = growth_cases(cases)
    projector = vlm.adapter.float32_projector()
    device = next(vlm.model.parameters()).device
    d_v = vlm.model.config.vision_config.hidden_size
    rows: list[dict[str, Any]] = []
    for case in timed_cases:
        method = get_method(case.method)
        for n in sorted(dict.fromkeys(ns)):
            gen = torch.Generator().manual_seed(seed)
            features = torch.randn(n, d_v, generator=gen).to(device)
            projected = projector(features)
            k = max(1, int(ratio * n))
            samples: dict[str, list[float]] = {"score": [], "select": [], "total": []}
            for r in range(repeats + 1):
                ctx = PruneContext(
                    projected=projected,
                    features=features,
                    projector=projector,
                    generator=torch.Generator().manual_seed(seed),
                    options=case.options() or None,
                )
                synchronize(vlm)
                start = time.perf_counter()
                sel = method(ctx, k)
                synchronize(vlm)
                total = (time.perf_counter() - start) * 1e3
                if r == 0:
                    continue  # warm-up
                samples["total"].append(total)
                samples["score"].append(float(sel.timings.get("score", 0.0)))
                samples["select"].append(
                    float(sel.timings.get("select", total - sel.timings.get("score", 0.0)))
                )
            rows.append(
                {
                    "label": case.label.split("@")[0],
                    "method": case.method,
                    "estimator": case.estimator,
                    "n": n,
                    "k": k,
                    "d_l": int(projected.shape[-1]),
                    "ms": {key: round(statistics.median(v), 3) for key, v in samples.items()},
                }
            )
    return {
        "ratio": ratio,
        "repeats": repeats,
        "rows": rows,
        "exponents": growth_exponents(rows),
        "skipped": skipped,
    }


def growth_exponents(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per case and phase: slope of log(ms) vs log(N) between its smallest and largest N."""
    out: dict[str, dict[str, float | None]] = {}
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = sorted((r for r in rows if r["label"] == label), key=lambda r: r["n"])
        lo, hi = mine[0], mine[-1]
        out[label] = {}
        for phase in ("score", "select", "total"):
            a, b = lo["ms"][phase], hi["ms"][phase]
            ok = hi["n"] > lo["n"] and a > 0 and b > 0
            out[label][phase] = round(math.log(b / a) / math.log(hi["n"] / lo["n"]), 2) if ok else None
    return out


def growth_table(growth: dict[str, Any]) -> str:
    """ms of scoring / selection per case and N, then the growth exponents."""
    head = f"{'case':<26}{'N':>7}{'k':>6}{'score ms':>11}{'select ms':>11}{'total ms':>11}"
    lines = [f"cost growth at a fixed ratio {growth['ratio']}", head, "-" * len(head)]
    for r in growth["rows"]:
        m = r["ms"]
        lines.append(
            f"{r['label']:<26}{r['n']:>7}{r['k']:>6}{m['score']:>11.2f}{m['select']:>11.2f}{m['total']:>11.2f}"
        )
    for label, exps in growth["exponents"].items():
        text = ", ".join(f"{phase} N^{v}" for phase, v in exps.items() if v is not None)
        lines.append(f"{label}: {text or 'n/a'}")
    for label, why in growth["skipped"].items():
        lines.append(f"{label}: skipped ({why})")
    return "\n".join(lines)
