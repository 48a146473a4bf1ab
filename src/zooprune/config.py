"""PruneConfig: which method, what budget, which seed, which options; validated once, passed explicitly."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .methods.base import Fidelity
from .methods.options import MethodOptions

if TYPE_CHECKING:
    from .methods import Method

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


#: How a budget applies to an image made of several crops or tiles (LLaVA-NeXT, OneVision, InternVL).
CropBudget = Literal["per-crop", "whole"]


@dataclass(frozen=True)
class PruneConfig:
    """Method name, budget and seed, the method's typed options, and how crops share the budget.

    ``seed`` seeds every random draw (zoo's directions, random's sample): the same config on
    the same inputs gives the same kept tokens, batched or one by one.

    Attributes:
        method: registered method name (aliases resolve to it).
        keep: int token count per image, or float ratio in (0, 1].
        seed: seed of every random draw.
        options: the method's options dataclass (e.g. ``ZooOptions``), or a dict of keyword
            options parsed into it; unknown or ignored options raise ``ValueError`` naming them.
        budget: ``"per-crop"`` (default; the paper's LLaVA-NeXT setting: the budget is split
            equally over the crops, each selected on its own) or ``"whole"`` (all crops one pool).
        fidelity: ``"improved"`` (default: float32, seeded, batched, this library's budget and crop
            rules) or ``"reference"`` (the method's reference code's semantics where the checkpoint
            allows: dtypes, budget rounding, tie and pivot rules, CLS handling, multi-crop handling;
            a method without one raises ``ValueError`` saying why). See ``docs/fidelity.md``.
    """

    method: str = "zoo"
    keep: Keep = 64
    seed: int = 0
    options: MethodOptions | Mapping[str, Any] | None = None
    budget: CropBudget = "per-crop"
    fidelity: Fidelity = "improved"

    def __post_init__(self) -> None:
        from .methods import get_method

        spec = get_method(self.method)  # raises a KeyError listing the methods
        object.__setattr__(self, "method", spec.name)
        validate_keep(self.keep)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        if self.budget not in ("per-crop", "whole"):
            raise ValueError(f"budget must be 'per-crop' or 'whole', got {self.budget!r}")
        if isinstance(self.options, Mapping) and "budget" in self.options:
            raise ValueError("'budget' is not a method option: pass budget='whole' to PruneConfig / load()")
        spec.check_fidelity(self.fidelity)  # unknown value, or a method without reference fidelity
        if self.fidelity == "reference":
            if self.budget != "per-crop":
                raise ValueError("budget='whole' is not a reference setting: fidelity='reference' follows the reference code's crop handling")
            object.__setattr__(self, "options", spec.reference_parse_options(self.options))
        else:
            object.__setattr__(self, "options", spec.parse_options(self.options))

    @property
    def spec(self) -> Method:
        """The registered :class:`~zooprune.methods.Method` (its function and metadata)."""
        from .methods import get_method

        return get_method(self.method)

    def replace(self, **changes: Any) -> PruneConfig:
        """A copy with ``changes``; a new method starts from its own default options."""
        if "method" in changes and "options" not in changes:
            changes["options"] = None
        return dataclasses.replace(self, **changes)


def comparison_options(method: str, estimator_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options ``method`` runs with in a comparison: ``estimator_options`` (e.g.
    ``{"estimator": "central", "num_directions": 16}``) if its metadata says it ``takes_estimator``,
    else none (its defaults). Raises ``KeyError`` for an unknown method."""
    from .methods import get_method

    return dict(estimator_options or {}) if get_method(method).takes_estimator else {}
