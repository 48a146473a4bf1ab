"""What a pruned run reports: per-image kept tokens and scores, token counts and timings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


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
        model_type: ``config.model_type`` of the model (its adapter knows where each token lies
            on the image: ``zooprune.viz`` draws with it).
        estimator: the sensitivity estimator behind ``scores`` for methods that take one (zoo's
            default is ``closed-form``; ``central`` is the paper's; ``central-fp16`` the reference
            code's), else None.
        fidelity: ``improved`` or ``reference`` (see ``docs/fidelity.md``).
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
    model_type: str | None = None
    estimator: str | None = None
    fidelity: str = "improved"

    def __post_init__(self) -> None:
        if self.equivalent_tokens is None:
            self.equivalent_tokens = float(self.tokens_after)

    def record_in_llm(self, indices: Tensor, scores: Tensor | None, layer: int, num_layers: int) -> None:
        """What an in-LLM method kept from ``layer`` on (of ``num_layers`` language-model layers)."""
        self.kept_indices = indices.cpu()
        self.scores = None if scores is None else scores.float().cpu()
        self.tokens_after = int(indices.numel())
        self.prune_layer = layer
        self.equivalent_tokens = (layer * self.tokens_before + (num_layers - layer) * self.tokens_after) / num_layers

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
            "model_type": self.model_type,
            "estimator": self.estimator,
            "fidelity": self.fidelity,
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
