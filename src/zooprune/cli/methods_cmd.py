"""``zooprune methods``: list the registered pruning methods and supported model types."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "methods",
        help="list pruning methods and supported model types",
        description="List every registered pruning method (with what it needs) and every supported config.model_type.",
    )
    parser.add_argument(
        "--matrix", action="store_true", help="print the model-type x method support matrix as markdown"
    )
    parser.set_defaults(handler=handle)


def support_matrix() -> str:
    """Markdown table: one row per model type, one column per method; derived from the registries
    (a method runs on a family when the family's adapter provides everything the method needs)."""
    from ..adapters import ADAPTERS
    from ..methods import METHODS

    names = METHODS.names()
    lines = ["| model type | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for model_type, adapter in ADAPTERS.items():
        cells = ["yes" if METHODS.get(n).needs <= adapter.provides else "-" for n in names]
        lines.append(f"| {model_type} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def handle(args: argparse.Namespace) -> int:
    from ..adapters import list_model_types
    from ..methods import METHODS

    if args.matrix:
        print(support_matrix())
        return 0

    print("methods:")
    for name, method in METHODS.items():
        needs = ", ".join(sorted(method.needs)) or "-"
        print(f"  {name:<16} {method.stage:<14} needs: {needs:<28} {method.summary}")
        options = ", ".join(f"{k}={v!r}" for k, v in method.options().to_dict().items())
        if options:
            print(f"  {'':<16} options: {options}")
    print("model types: " + ", ".join(list_model_types()))
    return 0
