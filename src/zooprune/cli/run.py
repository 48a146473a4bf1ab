"""``zooprune run``: answer one prompt about one image with pruned visual tokens."""

from __future__ import annotations

import argparse
import json

from .common import add_model_args, keep_arg, method_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "run",
        help="answer a prompt about an image with pruned visual tokens",
        description=(
            "Load a model, prune its visual tokens with METHOD down to KEEP tokens per image, "
            "and print the answer plus a one-line report (kept/total tokens, timings). "
            "The prompt goes through the model's own chat template."
        ),
    )
    add_model_args(parser)
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--prompt", required=True, help="question / instruction about the image")
    parser.add_argument(
        "--method", default="zoo", help="pruning method (see 'zooprune methods'; default: zoo)"
    )
    parser.add_argument(
        "--keep",
        type=keep_arg,
        default=64,
        help="tokens kept per image: count (64), ratio (0.111) or percent (11.1%%)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=32, help="generation length (default: 32)")
    parser.add_argument(
        "--json", action="store_true", help="print the full result (answer, kept indices, scores) as JSON"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..vlm import load, open_image

    image = open_image(args.image)  # fail on a missing file before loading the model
    vlm = load(
        args.model,
        method=args.method,
        keep=args.keep,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        fidelity=args.fidelity,
        **method_options(args),
    )
    result = vlm.generate([image], [args.prompt], max_new_tokens=args.max_new_tokens)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    report = result.reports[0]
    t = report.timings
    print(result.texts[0])
    estimator = f", estimator {report.estimator}" if report.estimator else ""
    fidelity = f", fidelity {report.fidelity}" if report.fidelity != "improved" else ""
    print(
        f"[{report.method}{estimator}{fidelity}] kept {report.tokens_after}/{report.tokens_before} visual tokens | "
        f"encode {t.get('encode', 0):.1f} ms, score {t.get('score', 0):.1f} ms, select {t.get('select', 0):.1f} ms, "
        f"prefill {t.get('prefill', 0):.1f} ms, decode {t.get('decode', 0):.1f} ms"
    )
    return 0
