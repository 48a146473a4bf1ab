"""``zooprune demo``: a local web app comparing methods on an uploaded image (needs the demo extra)."""

from __future__ import annotations

import argparse

from .common import add_model_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="web app: upload an image, ask, see each method's kept tokens, answer and timings",
        description=(
            "Serve a Gradio app on HOST:PORT: upload an image, type a question, pick methods and a "
            "budget; it shows each method's answer, kept-token overlay, kept/total tokens and "
            "timings side by side, plus the zoo sensitivity heatmap. Needs the demo extra: "
            "pip install 'zooprune[demo]'. Without --model it serves the embedded testbed model."
        ),
    )
    add_model_args(parser, model_required=False)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--keep", type=int, default=64, help="initial budget of the slider (default: 64)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="generation length (default: 16)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    import importlib.util
    from pathlib import Path

    from ..demo.app import build_app
    from ..methods import list_methods
    from ..vlm import load
    from .common import estimator_options, resolve_model

    if importlib.util.find_spec("gradio") is None:
        raise ValueError("the demo needs gradio: pip install 'zooprune[demo]'")
    options = estimator_options(args, list_methods())  # any method can be picked in the app
    model = resolve_model(args.model)
    vlm = load(
        model,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        fidelity=args.fidelity,
    )
    app = build_app(
        vlm,
        model_name=Path(model).name,
        keep=args.keep,
        max_new_tokens=args.max_new_tokens,
        estimator_options=options,
    )
    print(f"zooprune demo: serving {model} on http://{args.host}:{args.port}", flush=True)
    app.queue().launch(server_name=args.host, server_port=args.port, share=False, show_error=True)
    return 0
