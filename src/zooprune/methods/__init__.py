"""Pruning methods: pure tensor functions registered by name (see ``base.py`` for the contract).

Importing this package registers every built-in method; ``list_methods()`` names them.
"""

from __future__ import annotations

from . import (  # noqa: F401  (registration side effects)
    cdpruner,
    dart,
    divprune,
    fastv,
    holov,
    none,
    norm,
    pool,
    prunesid,
    pyramiddrop,
    random,
    sparsevlm,
    visionzip,
    vispruner,
    vscan,
    zoo,
)
from .base import METHODS, NEEDS, Method, PruneContext, Selection, get_method, register_method
from .options import InLLMOptions, MethodOptions


def list_methods() -> list[str]:
    """Names of every registered pruning method."""
    return METHODS.names()


__all__ = [
    "METHODS",
    "NEEDS",
    "InLLMOptions",
    "Method",
    "MethodOptions",
    "PruneContext",
    "Selection",
    "get_method",
    "list_methods",
    "register_method",
]
