"""``zooprune plot``: efficiency figures (PNG and SVG) from ``zooprune eval`` / ``zooprune bench`` JSON."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "plot",
        help="accuracy vs budget / prefill time / TTFT / FLOPs from eval and bench results (PNG + SVG)",
        description=(
            "Read 'zooprune eval' results and/or 'zooprune bench' JSON and draw every figure they "
            "support: accuracy vs visual-token budget, accuracy vs prefill time and vs time to first "
            "token (eval joined with bench by method and budget), accuracy vs prefill GFLOPs, "
            "prefill time vs budget. "
            "Each figure is written as OUT_<figure>.png and .svg."
        ),
    )
    parser.add_argument("--results", nargs="+", required=True, help="eval and/or bench JSON files")
    parser.add_argument("--out", default=None, help="output prefix (default: beside the first results file)")
    parser.add_argument("--title", default="", help="figure title (default: one per figure)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..plots import plot_results
    from ..results import read_results

    first = Path(args.results[0])
    out = args.out if args.out is not None else str(first.with_suffix(""))
    results = read_results(args.results)
    warning = results.mismatch()
    if warning:
        print(f"zooprune plot: warning: {warning}", file=sys.stderr)
    written = plot_results(args.results, out, title=args.title, results=results)
    if not written:
        raise ValueError("the results hold nothing to plot")
    for path in written:
        print(path)
    return 0
