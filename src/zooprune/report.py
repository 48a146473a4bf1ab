"""What a pruned run reports: per-image kept tokens and scores, token counts and timings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Add the wall-clock milliseconds of the ``with`` block to ``timings[key]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + (time.perf_counter() - start) * 1e3


@dataclass
class PruneReport:
    """One image's pruning record.

    Attributes:
        method: registered method name.
        keep: the requested budget (int count or float ratio).
        tokens_before: N, visual tokens the image produced.
        tokens_after: visual tokens kept (for in-LLM methods: from layer K on; all N enter layer 0).
        equivalent_tokens: visual tokens averaged over language-model layers (the FLOPs-equivalent
            count: ``(K N + (L - K) k) / L`` for in-LLM methods, ``tokens_after`` otherwise).
        text_tokens: non-visual tokens of the prompt this image belongs to.
        prune_layer: language-model layer from which only kept tokens remain (0 = before the LLM).
        kept_indices: ``(k,)`` LongTensor of kept token indices (original order).
        scores: ``(N,)`` float32 per-token scores of the method, or None.
        grid: ``(rows, cols)`` token grid of the image, or None.
        timings: milliseconds. ``score`` / ``select`` are this image's; ``encode``, ``prefill``,
            ``decode`` are shared by the whole batch the image was in.
    """

    method: str
    keep: int | float
    tokens_before: int
    tokens_after: int
    kept_indices: Tensor
    scores: Tensor | None = None
    grid: tuple[int, int] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    equivalent_tokens: float | None = None
    text_tokens: int = 0
    prune_layer: int = 0

    def __post_init__(self) -> None:
        if self.equivalent_tokens is None:
            self.equivalent_tokens = float(self.tokens_after)

    def overlay(self, image: Any, processor: Any, dim: float = 0.25) -> Any:
        """``image`` (PIL) with the patches of dropped tokens dimmed; see :func:`zooprune.viz.overlay`."""
        from .viz.overlay import overlay

        return overlay(image, self, processor, dim=dim)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (tensors as lists)."""
        return {
            "method": self.method,
            "keep": self.keep,
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
            "equivalent_tokens": round(float(self.equivalent_tokens), 3),
            "text_tokens": self.text_tokens,
            "prune_layer": self.prune_layer,
            "kept_indices": self.kept_indices.tolist(),
            "scores": None if self.scores is None else [round(float(s), 6) for s in self.scores],
            "grid": None if self.grid is None else list(self.grid),
            "timings_ms": {k: round(v, 3) for k, v in self.timings.items()},
        }


@dataclass
class GenerationResult:
    """Output of :meth:`zooprune.PrunedVLM.generate`: one text and one report per prompt's image(s)."""

    texts: list[str]
    reports: list[PruneReport]
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "texts": self.texts,
            "reports": [r.to_dict() for r in self.reports],
            "timings_ms": {k: round(v, 3) for k, v in self.timings.items()},
        }
