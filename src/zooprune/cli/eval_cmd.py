"""``zooprune eval``: accuracy of pruning methods at several budgets, resumable, with a table and a plot."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import parse_keep
from .args import parse_list
from .common import DEFAULT_MODEL, add_model_args, estimator_options, resolve_model

DEFAULT_KEEPS = "0.111"
#: Questions per configuration by default: the overall accuracy's 95 % Wilson interval is then at
#: most +-4.9 points (at 50 %; narrower elsewhere), see ``zooprune.eval.stats.half_width``.
DEFAULT_SAMPLES = 400


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "eval",
        help="accuracy of methods x budgets on the testbed or your own JSONL data",
        description=(
            "Evaluate every METHOD at every budget on freshly generated held-out testbed questions "
            "(the seed picks the data; training never used these seeds) or on a JSONL dataset of "
            "{image, question, answer[, family]}. Prints accuracy per question family and overall, "
            "relative to the unpruned model (the paper's 'Rel.' column), writes JSON and an "
            "accuracy-vs-budget plot, and resumes a killed run from its predictions file."
        ),
    )
    add_model_args(parser, model_required=False)
    parser.set_defaults(model=None)
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods; 'none' = unpruned (default: every registered method)",
    )
    parser.add_argument(
        "--keep",
        default=DEFAULT_KEEPS,
        help=f"comma-separated budgets (default: {DEFAULT_KEEPS}, i.e. 64 of LLaVA-1.5's 576 tokens)",
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=DEFAULT_SAMPLES,
        help=f"questions per configuration (default: {DEFAULT_SAMPLES}: the overall accuracy's 95 %% interval "
        "is then at most +-4.9 points; 100 gives +-9.6, 1000 gives +-3.1; family cells are wider)",
    )
    parser.add_argument(
        "--reference",
        default="zoo",
        help="comma-separated methods every other is compared with on the same questions at the same "
        "budget (paired bootstrap interval, McNemar p; one table column each; default: zoo; e.g. "
        "zoo,divprune; '' to skip)",
    )
    parser.add_argument(
        "--data", default=None, help="JSONL dataset instead of the generated testbed questions"
    )
    parser.add_argument(
        "--data-seed",
        type=int,
        default=None,
        help="testbed split to generate (default: the held-out eval seed of the model's testbed, v1 or v2,"
        " read from its tokenizer; v1 for other models)",
    )
    parser.add_argument(
        "--engine",
        choices=("hf", "vllm"),
        default="hf",
        help="hf: zooprune.load (default); vllm: a vLLM engine with the zooprune plugin (pre-LLM methods, "
        "LLaVA-1.5; needs vLLM, see docs/vllm.md)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generate call (default: 16)")
    parser.add_argument("--max-new-tokens", type=int, default=4, help="answer length (default: 4)")
    parser.add_argument(
        "--output", default="runs/eval/results.json", help="results JSON; predictions go beside it"
    )
    parser.add_argument("--markdown", default=None, help="also write the table as markdown to this file")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..eval.cache import PredictionCache
    from ..eval.data import generated_items, jsonl_items
    from ..eval.report import accuracy_table, markdown_table
    from ..eval.runner import evaluate
    from ..methods import get_method, list_methods
    from ..plots import plot_accuracy_vs_budget
    from ..testbed.variant import EVAL_SEEDS, model_testbed_variant
    from ..vlm import load

    registered = sorted(list_methods(), key=lambda m: get_method(m).prunes)  # the unpruned model first
    if args.engine == "vllm" and not args.methods:  # the vLLM plugin prunes before the language model
        registered = [m for m in registered if not get_method(m).in_llm]
    names = parse_list(args.methods, "--methods") if args.methods else registered
    methods = [get_method(m).name for m in names]  # unknown names fail here
    references = (
        [get_method(r).name for r in parse_list(args.reference, "--reference")] if args.reference else []
    )
    keeps = [parse_keep(k) for k in parse_list(args.keep, "--keep")]
    if args.num_samples < 1 or args.batch_size < 1:
        raise ValueError("--num-samples and --batch-size must be >= 1")
    model_path = resolve_model(args.model)
    if args.data:
        items = jsonl_items(args.data, args.num_samples)
        source = {"data": str(Path(args.data).resolve()), "num_samples": len(items)}
    else:  # the questions of the testbed the model was trained on (v2 reads v1's words too)
        variant = model_testbed_variant(model_path) or "v1"
        data_seed = EVAL_SEEDS[variant] if args.data_seed is None else args.data_seed
        items = generated_items(data_seed, args.num_samples, variant)
        source = {"testbed_seed": data_seed, "num_samples": len(items)}
        if variant == "v2":  # v1 settings keep their old keys, so earlier predictions files resume
            source["testbed"] = "v2"
    options = estimator_options(args, methods)  # for the methods that take an estimator only
    settings = {
        "model": str(Path(model_path).resolve()) if Path(model_path).exists() else model_path,
        **source,
        "prune_seed": args.seed,
        "max_new_tokens": args.max_new_tokens,
        "dtype": args.dtype or "default",
        "method_options": options,
        **({"fidelity": args.fidelity} if args.fidelity != "improved" else {}),
    }
    if args.engine == "vllm":
        if args.fidelity != "improved":
            raise ValueError("--engine vllm runs fidelity='improved' only")
        settings["engine"] = "vllm"  # predictions of the other engine are not reused
    output = Path(args.output)
    cache = PredictionCache(output.with_suffix(".predictions.jsonl"), settings)
    if args.engine == "vllm":
        from ..vllm.engine import VllmVLM

        vlm = VllmVLM.load(model_path, seed=args.seed, dtype=args.dtype)
    else:
        vlm = load(
            model_path,
            method="none",
            seed=args.seed,
            device=args.device,
            dtype=args.dtype,
            fidelity=args.fidelity,
        )
    summaries = evaluate(
        vlm,
        items,
        methods,
        keeps,
        cache,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        progress=not args.no_progress,
        estimator_options=options,
        references=references,
    )
    plots = plot_accuracy_vs_budget(
        summaries, output.with_name(output.stem + "_accuracy_vs_budget"), title=Path(model_path).name
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps({"settings": settings, "results": summaries, "plots": [str(p) for p in plots]}, indent=2)
        + "\n"
    )
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown_table(summaries))
    print(accuracy_table(summaries))
    print(f"\nresults: {output}\nplot: {plots[0]}")
    return 0


__all__ = ["DEFAULT_MODEL", "add_parser"]
