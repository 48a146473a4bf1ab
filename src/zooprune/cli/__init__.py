"""The ``zooprune`` command line: one subcommand per module in this package."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import bench_cmd, demo_cmd, eval_cmd, make_tiny, methods_cmd, plot_cmd, run, viz_cmd

SUBCOMMANDS = (run, eval_cmd, bench_cmd, methods_cmd, make_tiny, viz_cmd, plot_cmd, demo_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zooprune",
        description=(
            "Prune the visual tokens of Hugging Face vision-language models with ZOO-Prune "
            "(zeroth-order projector sensitivity x diversity) and compare it with other "
            "training-free methods. Run 'zooprune COMMAND --help' for each command."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zooprune`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"zooprune {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
