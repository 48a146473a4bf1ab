"""``zooprune methods``: list the registered pruning methods and supported model types."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "methods",
        help="list pruning methods and supported model types",
        description="List every registered pruning method (with what it needs) and every supported config.model_type.",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..adapters import list_model_types
    from ..methods import METHODS

    print("methods:")
    for name, method in METHODS.items():
        needs = ", ".join(sorted(method.needs)) or "-"
        print(f"  {name:<16} {method.stage:<8} needs: {needs:<28} {method.summary}")
    print("model types: " + ", ".join(list_model_types()))
    return 0
