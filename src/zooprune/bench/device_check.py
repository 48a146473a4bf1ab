"""GPU readiness check (issue 15, item 3): one prepared run for a machine with one NVIDIA GPU.

``scripts/device-check.sh OUT`` (a thin wrapper around ``python -m zooprune.bench.device_check OUT``)
needs only torch, transformers and the package's own light dependencies (no network, no
downloads: every model is built from a config with random weights) and writes
``OUT/device_check.json``, rewritten after every part so a run cut short still leaves what it
measured. Parts, in order:

* ``env``: torch / transformers / CUDA versions, the GPU, whether SDPA is used.
* ``sads`` (c): ZOO-Prune's SADS selection (``zoo.select``) at 64 of 576 and 320 of 2,880 tokens,
  d = 4096, float32 on the device: CUDA-event ms (median of 5 after 2 warm-ups), ms per greedy
  step, and whether the picks equal the CPU's.
* ``families`` (a): every tiny family of :data:`zooprune.testing.tiny.BUILDERS` in bfloat16 on
  the device: keep-all (``none`` and ``zoo`` at keep 1.0) logits == the stock model's, and a
  ragged batch of 3 images == one by one (kept indices and 5 greedy tokens) for zoo, divprune
  and fastv where the support matrix allows. Each check records ``equal`` and the largest
  logit difference; bf16 kernels may pick other reductions at other batch shapes, so a
  mismatch is data to read, not a crash.
* ``full`` (b): 32-layer LLaVA-1.5-7B- and LLaVA-NeXT-7B-shaped random-weight models
  (:mod:`zooprune.bench.synthetic`) in bfloat16 with SDPA, initialised on the GPU: unpruned,
  zoo with each sensitivity estimator, divprune and fastv at the paper's budgets (192 / 128 / 64
  of 576; 640 / 320 / 160 of 2,880). Per case, CUDA-event medians of: ``prepare`` (processor,
  vision encode, scoring, selection, splice), ``prefill`` (one forward of the whole model on
  the spliced inputs with a KV cache; in-LLM methods with their hooks), ``ttft`` (prepare +
  prefill, one block), ``e2e`` (prepare + ``generate`` of 8 new tokens, one block); scoring and
  selection as the methods time them (host clock); tokens, the FLOPs bound and speed-ups.

A time budget (``--budget-s``, default 420 s; the shell wrapper kills at 480 s) skips what
would not finish, saying so. ``--dry-run`` runs the same code on the CPU with tiny shapes
(seconds; CI runs it in ``tests/test_device_check.py`` so the script cannot rot).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from ..config import Keep, PruneConfig
from ..results import unpruned
from .flops import prefill_flops, staged_flops
from .runner import bench_image, bench_prompt, unused_copy

#: The paper's budgets (kept of budgeted tokens) per synthetic shape.
PAPER_BUDGETS = {"llava-1.5-7b": (192, 128, 64), "llava-next-7b": (640, 320, 160)}
#: Dry-run stand-ins: the same geometry rules at tiny widths, budgets as the same fractions.
DRY_SHAPES = {"llava-1.5-7b": "tiny,layers=3,image_size=64", "llava-next-7b": "llava-next-tiny"}
SADS_CASES = ((576, 64), (2880, 320))
SADS_DIM = 4096


class Clock:
    """Milliseconds of a block: CUDA events on a GPU (synchronised before and after), else perf_counter."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    @contextmanager
    def time(self, out: dict[str, float], key: str) -> Iterator[None]:
        if self.cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            end.synchronize()
            out[key] = float(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            yield
            out[key] = (time.perf_counter() - begin) * 1e3


class Budget:
    """The run's deadline: ``left()`` seconds remain; ``allows(estimate)`` if a step of that length fits."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def allows(self, estimate_s: float) -> bool:
        return self.left() > estimate_s


def attempt(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``, or ``{"error": ..., "traceback": ...}`` if it raises (one failure never ends the run)."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - every failure is data for the report
        return {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(limit=6)}


# ---- env -----------------------------------------------------------------------------------------
def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return env


# ---- (c) SADS -------------------------------------------------------------------------------------
def sads_check(
    device: torch.device, cases: tuple[tuple[int, int], ...], dim: int, repeats: int = 5
) -> dict[str, Any]:
    """SADS picks and time at each (N, k): device vs CPU."""
    from ..methods.zoo import select

    clock = Clock(device)
    rows = []
    for n, k in cases:
        gen = torch.Generator().manual_seed(n)
        projected = torch.randn(n, dim, generator=gen)
        scores = torch.rand(n, generator=gen)
        want = select(projected, scores, k)
        z, s = projected.to(device), scores.to(device)
        times: list[float] = []
        got = None
        for r in range(repeats + 2):
            out: dict[str, float] = {}
            with clock.time(out, "ms"):
                got = select(z, s, k)
            if r >= 2:
                times.append(out["ms"])
        assert got is not None
        got = got.cpu()
        overlap = len(set(got.tolist()) & set(want.tolist())) / k
        ms = statistics.median(times)
        rows.append(
            {
                "n": n,
                "k": k,
                "d": dim,
                "ms": round(ms, 3),
                "ms_per_step": round(ms / k, 4),
                "samples_ms": [round(t, 3) for t in times],
                "picks_equal_cpu": bool(torch.equal(got, want)),
                "overlap_with_cpu": round(overlap, 4),
            }
        )
    return {"rows": rows}


# ---- (a) tiny families ----------------------------------------------------------------------------
def family_checks(device: torch.device, dtype: torch.dtype, budget: Budget) -> dict[str, Any]:
    """Keep-all == stock and ragged batch == one by one for every tiny family (see the module docstring)."""
    from ..testing.tiny import BUILDERS
    from .device_families import one_family

    out: dict[str, Any] = {}
    for name in sorted(BUILDERS):
        if not budget.allows(20):
            out[name] = {"skipped": "time budget"}
            continue
        out[name] = attempt(lambda name=name: one_family(name, BUILDERS[name], device, dtype))
    return out


# ---- (b) full-depth models ------------------------------------------------------------------------
def budgets_for(shape_name: str, budgeted: int, dry_run: bool) -> list[Keep]:
    """The paper's budgets, or (dry run) the same fractions of the tiny shape's budgeted tokens."""
    paper = PAPER_BUDGETS[shape_name]
    if not dry_run:
        return list(paper)
    full = {"llava-1.5-7b": 576, "llava-next-7b": 2880}[shape_name]
    return [max(1, budgeted * k // full) for k in paper]


def full_cases(budgets: list[Keep]) -> list[dict[str, Any]]:
    """Unpruned; zoo with each estimator, divprune and fastv at every budget."""
    from ..methods.estimators import ESTIMATORS

    cases: list[dict[str, Any]] = [{"method": "none", "keep": 1.0, "options": {}}]
    for keep in budgets:
        cases += [{"method": "zoo", "keep": keep, "options": {"estimator": est}} for est in ESTIMATORS]
        cases += [
            {"method": "divprune", "keep": keep, "options": {}},
            {"method": "fastv", "keep": keep, "options": {}},
        ]
    return cases


def label(case: dict[str, Any]) -> str:
    est = case["options"].get("estimator")
    name = case["method"] if est is None else f"{case['method']}/{est}"
    return name if unpruned(case["method"]) else f"{name}@{case['keep']}"


def full_model(
    shape_name: str,
    spec: str,
    device: torch.device,
    dtype: torch.dtype,
    budget: Budget,
    dry_run: bool,
    repeats: int,
    new_tokens: int,
    prompt_words: int = 48,
) -> dict[str, Any]:
    """Every case of :func:`full_cases` on one synthetic model (see the module docstring)."""
    from ..vlm import PrunedVLM
    from .synthetic import anyres_counts, parse_shape, synthetic_llava

    _, shape = parse_shape(spec)
    start = time.perf_counter()
    model, processor = synthetic_llava(
        shape, seed=0, dtype=dtype, device=device
    )  # SDPA: transformers' default
    build_s = time.perf_counter() - start
    vlm = PrunedVLM(model, processor, PruneConfig("none", keep=1.0))
    side = shape.image_side
    image, prompt = bench_image(side, 0), bench_prompt(prompt_words)
    visual, newlines = anyres_counts(model.config, side, side)
    budgets = budgets_for(shape_name, visual - newlines, dry_run)
    lm = shape.lm()
    clock = Clock(device)
    rows: list[dict[str, Any]] = []
    last_case_s = 5.0
    for case in full_cases(budgets):
        if not budget.allows(2 * last_case_s + 5):
            rows.append({"label": label(case), "skipped": "time budget"})
            continue
        case_start = time.perf_counter()
        row = attempt(lambda case=case: full_case(vlm, case, image, prompt, clock, repeats, new_tokens))
        last_case_s = time.perf_counter() - case_start
        row["label"] = label(case)
        if "error" not in row:
            row["prefill_flops"] = prefill_flops_staged(row, lm)
            row["seconds"] = round(last_case_s, 2)
        rows.append(row)
    base = next((r for r in rows if "ms" in r and unpruned(r["method"])), None)
    if base is not None:
        for row in rows:
            if "ms" in row:
                row["flops_bound_speedup"] = round(base["prefill_flops"] / row["prefill_flops"], 3)
                row["speedup"] = {
                    k: round(base["ms"][k] / v, 3) for k, v in row["ms"].items() if v > 0 and k in base["ms"]
                }
                row["prefill_speedup_of_bound"] = round(
                    row["speedup"].get("prefill", 0.0) / row["flops_bound_speedup"], 3
                )
    result = {
        "shape": spec,
        "layers": shape.layers,
        "dtype": str(dtype).replace("torch.", ""),
        "attn_implementation": model.config.text_config._attn_implementation,
        "build_s": round(build_s, 1),
        "image_px": side,
        "visual_tokens": visual,
        "budgeted_tokens": visual - newlines,
        "newline_tokens": newlines,
        "budgets": budgets,
        "repeats": repeats,
        "new_tokens": new_tokens,
        "rows": rows,
    }
    if device.type == "cuda":
        result["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return result


def release(device: torch.device) -> None:
    """Give the last model's memory back before the next one is built."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def prefill_flops_staged(row: dict[str, Any], lm: Any) -> float:
    """FastV / DivPrune formula over the model's layers, each in-LLM stage at its own length."""
    text = row["seq_len_full"] - row["visual_tokens"]
    return staged_flops(
        prefill_flops,
        row["seq_len_full"],
        text + row["kept_tokens"],
        row["prune_layer"],
        lm.layers,
        lm,
        [(layer, text + visual) for layer, visual in row["stages"] or ()],
    )


@torch.no_grad()
def full_case(
    vlm: Any, case: dict[str, Any], image: Any, prompt: str, clock: Clock, repeats: int, new_tokens: int
) -> dict[str, Any]:
    """One case: 1 warm-up + ``repeats`` timed rounds of (prepare + prefill) and (prepare + generate)."""
    from ..vlm import generate_pruned

    configured = vlm.using(method=case["method"], keep=case["keep"], **case["options"])
    model = configured.model
    gen = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}
    samples: dict[str, list[float]] = {}
    report = prepared = None
    for r in range(repeats + 1):
        t: dict[str, float] = {}
        with clock.time(t, "ttft"):
            with clock.time(t, "prepare"):
                prepared = configured.prepare([image], [prompt])
            plan = unused_copy(prepared.plan)
            with clock.time(t, "prefill"):
                with plan.active() if plan is not None else nullcontext():
                    model(**prepared.model_kwargs(), use_cache=True, logits_to_keep=1)
        report = plan.reports[0] if plan is not None else prepared.reports[0]
        with clock.time(t, "e2e"):
            again = configured.prepare([image], [prompt])
            generate_pruned(model, again, **gen)
        t["score_host"] = float(report.timings.get("score", 0.0))
        t["select_host"] = float(report.timings.get("select", 0.0))
        if r > 0:
            for key, value in t.items():
                samples.setdefault(key, []).append(value)
    assert report is not None and prepared is not None
    visual, kept = report.tokens_before, report.tokens_after
    length = int(prepared.spliced.attention_mask[0].sum())  # in-LLM methods splice every visual token
    text = length - (visual if prepared.plan is not None else kept)
    return {
        "method": case["method"],
        "keep": case["keep"],
        "options": case["options"],
        "visual_tokens": visual,
        "kept_tokens": kept,
        "equivalent_tokens": report.equivalent_tokens,
        "prune_layer": report.prune_layer,
        "stages": [list(s) for s in report.stages],
        "seq_len_full": text + visual,
        "seq_len": text + kept,
        "ms": {k: round(statistics.median(v), 3) for k, v in samples.items()},
        "samples_ms": {k: [round(x, 3) for x in v] for k, v in samples.items()},
    }


# ---- driver ---------------------------------------------------------------------------------------
def run(
    out_dir: str | Path, dry_run: bool = False, budget_s: float = 420.0, parts: list[str] | None = None
) -> dict[str, Any]:
    """Run the check, writing ``out_dir/device_check.json`` after every part; returns the report."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "device_check.json"
    budget = Budget(budget_s)
    parts = parts or ["sads", "families", "full"]
    if dry_run:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --dry-run for the CPU smoke test")
    dtype = torch.bfloat16
    report: dict[str, Any] = {
        "meta": {
            "dry_run": dry_run,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "budget_s": budget_s,
            "parts": parts,
        },
        "env": attempt(lambda: environment(device)),
    }

    def save() -> None:
        report["meta"]["elapsed_s"] = round(budget_s - budget.left(), 1)
        path.write_text(json.dumps(report, indent=2) + "\n")

    save()
    if "sads" in parts:
        cases = ((64, 8), (160, 16)) if dry_run else SADS_CASES
        report["sads"] = attempt(lambda: sads_check(device, cases, 64 if dry_run else SADS_DIM))
        save()
    if "families" in parts:
        report["families"] = attempt(lambda: family_checks(device, dtype, budget))
        save()
    if "full" in parts:
        report["full"] = {}
        for shape_name in PAPER_BUDGETS:
            spec = DRY_SHAPES[shape_name] if dry_run else f"{shape_name},layers=32"
            if not budget.allows(30):
                report["full"][shape_name] = {"skipped": "time budget"}
                continue
            report["full"][shape_name] = attempt(
                lambda spec=spec, shape_name=shape_name: full_model(
                    shape_name,
                    spec,
                    device,
                    dtype,
                    budget,
                    dry_run,
                    repeats=1 if dry_run else 3,
                    new_tokens=8,
                )
            )
            release(device)
            save()
    report["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    report["summary"] = summary(report)
    save()
    return report


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers and every failure, for a quick read."""
    out: dict[str, Any] = {"errors": []}

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "error" in node:
                out["errors"].append(f"{where}: {node['error']}")
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else key)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk({k: v for k, v in report.items() if k != "summary"}, "")
    families = report.get("families") or {}
    out["families_ok"] = {k: v.get("ok") for k, v in families.items() if isinstance(v, dict)}
    out["sads_ms"] = {f"{r['k']}/{r['n']}": r["ms"] for r in (report.get("sads") or {}).get("rows", [])}
    for shape_name, res in (report.get("full") or {}).items():
        for row in res.get("rows", []) if isinstance(res, dict) else []:
            if "speedup" in row:
                out.setdefault("ttft_speedup", {})[f"{shape_name} {row['label']}"] = row["speedup"].get(
                    "ttft"
                )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="device-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="directory for device_check.json")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, seconds (CI smoke test)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="time budget in seconds (default 420)")
    parser.add_argument(
        "--parts", default="sads,families,full", help="comma-separated subset of sads,families,full"
    )
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"sads", "families", "full"}
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}")
    report = run(args.out, dry_run=args.dry_run, budget_s=args.budget_s, parts=parts)
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {Path(args.out) / 'device_check.json'}")
    return 1 if report["summary"]["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
