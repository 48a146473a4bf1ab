"""``zooprune make-tiny``: write a tiny random LLaVA checkpoint (weights + processor), offline."""

from __future__ import annotations

import argparse

#: families with a tiny builder (``zooprune.testing.tiny.BUILDERS``; kept literal so --help stays fast)
FAMILIES = ("gemma3", "internvl", "llava", "llava_next", "llava_onevision", "qwen2_5_vl", "qwen2_vl")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "make-tiny",
        help="write a tiny random LLaVA checkpoint to try the library without weights",
        description=(
            "Build a tiny random LLaVA (16 visual tokens) or LLaVA-NeXT (anyres, 56 px crops) with a word-level "
            "tokenizer, processor and chat template, and save_pretrained it to OUT. Its answers are "
            "meaningless; it exercises the same loading and pruning code as a real checkpoint."
        ),
    )
    parser.add_argument("out", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    parser.add_argument(
        "--family",
        default="llava",
        choices=FAMILIES,
        help="model family (default: llava)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..testing.tiny import save_tiny_llava

    path = save_tiny_llava(args.out, seed=args.seed, family=args.family)
    print(f"wrote a tiny random {args.family} checkpoint to {path}")
    return 0
