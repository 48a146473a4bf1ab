"""Pruning methods: pure tensor functions registered by name (see ``base.py`` for the contract).

Importing this package registers every built-in method; ``list_methods()`` names them.
"""

from __future__ import annotations

from . import cdpruner, dart, divprune, fastv, none, norm, pool, random, visionzip, zoo  # noqa: F401  (registration side effects)
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
