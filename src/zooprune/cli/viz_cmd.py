"""``zooprune viz``: one figure comparing what each method keeps of one image, and what it answers."""

from __future__ import annotations

import argparse
import sys

from .common import add_model_args, estimator_options, keep_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "viz",
        help="figure: kept-token overlays, answers and the zoo sensitivity heatmap, per method",
        description=(
            "Answer PROMPT about IMAGE with each METHOD at budget KEEP and draw one figure: the "
            "input image, for each method the image with dropped patches dimmed (caption: answer, "
            "kept/total tokens, pruning and prefill time), and the zoo sensitivity heatmap. Token "
            "patches follow the processor's resize and center crop; greyed margins are never seen."
        ),
    )
    add_model_args(parser, model_required=False)
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--prompt", required=True, help="question / instruction about the image")
    parser.add_argument(
        "--methods",
        default="zoo,divprune,visionzip",
        help="comma-separated methods (default: zoo,divprune,visionzip)",
    )
    parser.add_argument(
        "--keep",
        type=keep_arg,
        default=64,
        help="tokens kept per image: count, ratio or percent (default: 64)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=16, help="generation length (default: 16)")
    parser.add_argument("--no-heatmap", action="store_true", help="leave out the zoo sensitivity heatmap")
    parser.add_argument("--dpi", type=int, default=100, help="figure resolution (default: 100)")
    parser.add_argument(
        "--out", default="viz.png", help="figure path, PNG / SVG / PDF by suffix (default: viz.png)"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..methods import get_method
    from ..viz import run_methods, sensitivity_report
    from ..viz.compare import SENSITIVITY_METHOD
    from ..viz.figure import comparison_figure, save_figure
    from ..vlm import load, open_image
    from .args import parse_list
    from .common import resolve_model

    methods = [get_method(m).name for m in parse_list(args.methods, "--methods")]
    heatmap_methods = [] if args.no_heatmap else [SENSITIVITY_METHOD]
    options = estimator_options(args, methods + heatmap_methods)  # for the estimator methods only
    image = open_image(args.image)
    vlm = load(
        resolve_model(args.model),
        method=methods[0],
        keep=args.keep,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        fidelity=args.fidelity,
    )
    runs = run_methods(
        vlm,
        image,
        args.prompt,
        methods,
        args.keep,
        args.max_new_tokens,
        keep_going=True,
        estimator_options=options,
    )
    if all(run.report is None for run in runs):
        raise ValueError("no method could run: " + "; ".join(f"{r.method}: {r.error}" for r in runs))
    sensitivity = None
    if not args.no_heatmap:
        try:
            sensitivity = sensitivity_report(vlm, image, args.prompt, runs, options)
        except ValueError as err:
            print(f"zooprune viz: warning: no sensitivity heatmap: {err}", file=sys.stderr)
    fig = comparison_figure(image, runs, vlm.processor, sensitivity, prompt=args.prompt, dpi=args.dpi)
    for run in runs:
        if run.report is None:
            print(f"zooprune viz: warning: {run.method} left out: {run.error}", file=sys.stderr)
        else:
            print(f"[{run.method}] {run.answer!r} | {run.summary()}")
    for path in save_figure(fig, args.out):
        print(f"figure: {path}")
    return 0
