"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse

from ..config import parse_keep


def add_model_args(parser: argparse.ArgumentParser, *, model_required: bool = True) -> None:
    parser.add_argument(
        "--model", required=model_required, help="model folder (save_pretrained layout) or hub id"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--dtype",
        default=None,
        help="model dtype: float32 | bfloat16 | float16 | auto (default: float32 on CPU)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    parser.add_argument(
        "--num-directions",
        type=int,
        default=None,
        help="zoo: random directions m (default: 64, as the paper)",
    )
    parser.add_argument(
        "--step", type=float, default=None, help="zoo: finite-difference step h (default: 0.01)"
    )
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow the checkpoint's own code (off by default)"
    )


def method_options(args: argparse.Namespace) -> dict[str, float | int]:
    """Method options given on the command line (only those set)."""
    opts: dict[str, float | int] = {}
    if args.num_directions is not None:
        opts["num_directions"] = args.num_directions
    if args.step is not None:
        opts["step"] = args.step
    return opts


def keep_arg(text: str):
    """argparse type for a budget: int count, float ratio, or percentage."""
    try:
        return parse_keep(text)
    except (ValueError, TypeError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None
