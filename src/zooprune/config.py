"""PruneConfig: which method, what budget, which seed; validated once, passed explicitly."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

Keep = int | float


def validate_keep(keep: Keep) -> Keep:
    """Check a budget: an int count >= 1, or a float ratio in (0, 1]. Returns it unchanged."""
    if isinstance(keep, bool) or not isinstance(keep, (int, float)):
        raise TypeError(f"keep must be an int token count or a float ratio in (0, 1], got {keep!r}")
    if isinstance(keep, float):
        if not math.isfinite(keep) or not 0.0 < keep <= 1.0:
            raise ValueError(
                f"keep ratio must be in (0, 1], got {keep}; pass an int (e.g. keep=64) for a token count"
            )
    elif keep <= 0:
        raise ValueError(f"keep must be >= 1 token, got {keep}")
    return keep


def parse_keep(text: str) -> Keep:
    """Parse a CLI budget: ``"64"`` -> 64 tokens, ``"0.111"`` / ``"11.1%"`` -> a ratio."""
    text = text.strip()
    try:
        if text.endswith("%"):
            return validate_keep(float(text[:-1]) / 100.0)
        if any(c in text for c in ".eE"):
            return validate_keep(float(text))
        return validate_keep(int(text))
    except ValueError as err:
        raise ValueError(f"bad budget {text!r}: {err}") from None


def resolve_budget(keep: Keep, num_tokens: int) -> int:
    """Number of tokens to keep out of ``num_tokens``.

    An int is a count (capped at ``num_tokens``); a float r is a ratio, k = int(r * N) as in the
    reference code (0.1112 * 576 = 64), and at least 1.
    """
    validate_keep(keep)
    if num_tokens <= 0:
        raise ValueError(f"no visual tokens to prune (num_tokens={num_tokens})")
    if isinstance(keep, float):
        return max(1, min(num_tokens, int(keep * num_tokens)))
    return min(int(keep), num_tokens)


@dataclass
class PruneConfig:
    """Method name, budget and seed, plus method-specific options (e.g. ``num_directions``).

    ``seed`` seeds every random draw (zoo's directions, random's sample): the same config on
    the same inputs gives the same kept tokens, batched or one by one.
    """

    method: str = "zoo"
    keep: Keep = 64
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from .methods import get_method

        self.method = get_method(self.method).name  # raises a KeyError listing the methods
        validate_keep(self.keep)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
