"""``zooprune bench``: speed of the unpruned model and of each method x budget, side by side."""

from __future__ import annotations

import argparse

from .args import parse_list


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench",
        help="time vision encode, scoring, selection, prefill and decode, pruned vs unpruned",
        description=(
            "Measure the unpruned model and every METHOD at every budget side by side: vision "
            "encode, scoring, selection, prefill (time to first token), decode ms/token, end to "
            "end, peak memory, KV-cache size, theoretical prefill FLOPs and the FLOPs-bound "
            "speed-up. Medians over repeats after warm-up; prints a table, writes JSON and a plot. "
            "--synthetic-shape builds a random-weight model with real widths, e.g. "
            "'llava-1.5-7b,layers=2' (language-model depth reduced for CPU) or 'llava-next-7b,layers=2' "
            "(LLaVA-NeXT anyres: a 672 px image, 2,880 budgeted tokens + 48 newlines). --batch 1,4,8 "
            "measures images/s and TTFT per batch size instead, image i at budget KEEP[i mod len(KEEP)]. "
            "--growth-n times scoring and selection against the token count N."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model folder (save_pretrained layout) or hub id")
    source.add_argument(
        "--synthetic-shape",
        help="llava-1.5-7b | llava-1.5-13b | llava-next-7b | tiny | llava-next-tiny, with optional "
        ",key=value overrides (layers, vision_layers, hidden, intermediate, image, ...)",
    )
    parser.add_argument(
        "--methods", default="zoo", help="comma-separated methods (default: zoo; none is always run)"
    )
    parser.add_argument("--keep", default="64", help="comma-separated budgets (default: 64)")
    parser.add_argument(
        "--estimator",
        default=None,
        help="comma-separated sensitivity estimators for the zoo methods "
        "(central | jvp | closed-form; default: central and the library default)",
    )
    parser.add_argument("--num-directions", type=int, default=None, help="m for central / jvp (default: 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per case first (default: 1)")
    parser.add_argument("--new-tokens", type=int, default=8, help="generated tokens per run (default: 8)")
    parser.add_argument("--prompt-words", type=int, default=48, help="prompt length in words (default: 48)")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (default: float32)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="weights / image seed (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--batch",
        default=None,
        help="comma-separated batch sizes, e.g. 1,4,8: throughput with ragged per-image budgets "
        "(the --keep values in turn) instead of the per-case table",
    )
    parser.add_argument(
        "--growth-n",
        default=None,
        help="comma-separated token counts N, e.g. 576,1152,2880,5760: also time scoring and "
        "selection of each pre-LLM method at each N (random features, k = --growth-ratio * N)",
    )
    parser.add_argument(
        "--growth-ratio", type=float, default=0.111, help="kept ratio for --growth-n (default: 0.111)"
    )
    parser.add_argument(
        "--output", default="runs/bench/bench.json", help="JSON path; the plot goes beside it"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    import torch

    from ..bench import run_bench
    from ..config import parse_keep
    from ..methods import get_method
    from ..methods.estimators import get_estimator

    dtype = getattr(torch, args.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {args.dtype!r}; use float32, bfloat16 or float16")
    methods = [get_method(m).name for m in parse_list(args.methods, "--methods")]
    keeps = [parse_keep(k) for k in parse_list(args.keep, "--keep")]
    batch = None if args.batch is None else [int(b) for b in parse_list(args.batch, "--batch")]
    growth = None if args.growth_n is None else [int(n) for n in parse_list(args.growth_n, "--growth-n")]
    estimators = (
        None if args.estimator is None else [get_estimator(e).name for e in parse_list(args.estimator, "--estimator")]
    )
    run_bench(
        model=args.model,
        synthetic_shape=args.synthetic_shape,
        methods=methods,
        keeps=keeps,
        estimators=estimators,
        num_directions=args.num_directions,
        repeats=args.repeats,
        warmup=args.warmup,
        new_tokens=args.new_tokens,
        prompt_words=args.prompt_words,
        dtype=dtype,
        threads=args.threads,
        seed=args.seed,
        device=args.device,
        batch_sizes=batch,
        growth_ns=growth,
        growth_ratio=args.growth_ratio,
        output=args.output,
    )
    return 0
