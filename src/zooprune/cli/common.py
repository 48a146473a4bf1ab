"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from ..config import parse_keep

#: The embedded testbed model (ships with the git repository, not with the wheel): the v2 testbed
#: since it met issue 13's bars; the v1 model stays beside it in ``models/testbed-llava``.
DEFAULT_MODEL = Path(__file__).resolve().parents[3] / "models" / "testbed-llava-v2"


def resolve_model(model: str | None) -> str:
    """``--model`` or, when omitted, the embedded testbed model (clear error if it is absent)."""
    if model is not None:
        return model
    if not DEFAULT_MODEL.is_dir():
        raise FileNotFoundError(
            f"no --model given and the embedded testbed model is not at {DEFAULT_MODEL} "
            "(it ships with the git repository; install from a clone with 'pip install -e .')"
        )
    return str(DEFAULT_MODEL)


def add_model_args(parser: argparse.ArgumentParser, *, model_required: bool = True) -> None:
    parser.add_argument(
        "--model",
        required=model_required,
        help="model folder (save_pretrained layout) or hub id"
        + ("" if model_required else "; default: the embedded testbed model models/testbed-llava-v2"),
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
        "--estimator",
        type=estimator_arg,
        default=None,
        help="zoo: sensitivity estimator central | jvp | closed-form (default: closed-form; "
        "central is the paper's)",
    )
    parser.add_argument(
        "--fidelity",
        choices=("improved", "reference"),
        default="improved",
        help="improved (default: float32, seeded, batched) | reference: reproduce each method's reference "
        "code (fp16 ZOO scoring, its budget rounding, tie and crop rules; fastv re-selects at every "
        "decoding step without a KV cache, slow by design); methods without one are an error "
        "(see docs/fidelity.md)",
    )
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow the checkpoint's own code (off by default)"
    )


def method_options(args: argparse.Namespace) -> dict[str, float | int | str]:
    """Method options given on the command line (only those set)."""
    opts: dict[str, float | int | str] = {}
    if getattr(args, "estimator", None) is not None:
        opts["estimator"] = args.estimator
    if args.num_directions is not None:
        opts["num_directions"] = args.num_directions
    if args.step is not None:
        opts["step"] = args.step
    return opts


def estimator_options(args: argparse.Namespace, methods: Iterable[str]) -> dict[str, float | int | str]:
    """``--estimator`` / ``--num-directions`` / ``--step`` for commands that compare ``methods``: they
    go only to the methods whose metadata says ``takes_estimator`` (the others run with their
    defaults), so they are checked here, once, against those methods' options (a clear error, e.g.
    for ``--num-directions`` with the closed-form estimator, or when no method takes an estimator).
    """
    from ..methods import get_method

    opts = method_options(args)
    names = list(methods)
    takers = [spec for spec in map(get_method, names) if spec.takes_estimator]
    if opts and not takers:
        flags = ", ".join("--" + key.replace("_", "-") for key in opts)
        raise ValueError(
            f"{flags}: only methods that take a sensitivity estimator use these, and none of "
            f"{', '.join(names)} does"
        )
    for spec in takers:
        spec.parse_options(opts)  # raises naming the option and the method
    return opts


def keep_arg(text: str):
    """argparse type for a budget: int count, float ratio, or percentage."""
    try:
        return parse_keep(text)
    except (ValueError, TypeError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def estimator_arg(text: str) -> str:
    """argparse type for ``--estimator``: a registered estimator name (normalised)."""
    from ..methods.estimators import get_estimator

    try:
        return get_estimator(text).name
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
