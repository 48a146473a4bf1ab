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
            count: ``(K N + (L - K) k) / L`` for one in-LLM stage, ``(K_1 N + sum_s (K_{s+1} - K_s)
            n_s) / L`` for several (``K_{S+1} = L``), ``tokens_after`` otherwise).
        text_tokens: non-visual tokens of the prompt this image belongs to.
        prune_layer: language-model layer from which only kept tokens remain (0 = before the LLM; the
            last stage's layer for multi-stage in-LLM methods).
        stages: in-LLM methods: ``(K_s, n_s)`` per stage, the layer from which ``n_s`` visual tokens
            remain (one stage for FastV / DART; empty for pre-LLM methods).
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
        entered: methods that prune before the LLM and again inside it: ``(n_0,)`` indices (into the N)
            of the tokens the LLM received, which the in-LLM stages' indices point into; else None.
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
    stages: list[tuple[int, int]] = field(default_factory=list)
    entered: Tensor | None = None

    def __post_init__(self) -> None:
        if self.equivalent_tokens is None:
            self.equivalent_tokens = float(self.tokens_after)

    def record_in_llm(self, indices: Tensor, scores: Tensor | None, layer: int, num_layers: int) -> None:
        """What an in-LLM method kept from ``layer`` on (of ``num_layers`` language-model layers): called
        once per stage, in layer order (a stage at or after ``layer`` recorded before is replaced).
        ``indices`` point into the tokens the LLM received: into ``entered`` when set (the report keeps
        its pre-LLM ``(N,)`` scores then), else into the N."""
        if self.entered is not None:
            self.kept_indices = self.entered[indices.cpu()]
        else:
            self.kept_indices = indices.cpu()
            self.scores = None if scores is None else scores.float().cpu()
        self.tokens_after = int(indices.numel())
        self.prune_layer = layer
        self.stages = [st for st in self.stages if st[0] < layer] + [(layer, self.tokens_after)]
        self.equivalent_tokens = layer_averaged_tokens(self.tokens_before, self.stages, num_layers)

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
            "stages": [list(st) for st in self.stages],
            "model_type": self.model_type,
            "estimator": self.estimator,
            "fidelity": self.fidelity,
            "kept_indices": self.kept_indices.tolist(),
            "scores": None if self.scores is None else [round(float(s), 6) for s in self.scores],
            "grid": None if self.grid is None else list(self.grid),
            "timings_ms": {k: round(v, 3) for k, v in self.timings.items()},
        }


def layer_averaged_tokens(tokens_before: int, stages: list[tuple[int, int]], num_layers: int) -> float:
    """Visual tokens averaged over ``num_layers`` layers: ``tokens_before`` up to the first stage's layer,
    then each stage's ``(layer, tokens)`` up to the next one (exact integer sum, one division)."""
    total, layer, tokens = 0, 0, tokens_before
    for stage_layer, stage_tokens in stages:
        total += (stage_layer - layer) * tokens
        layer, tokens = stage_layer, stage_tokens
    return (total + (num_layers - layer) * tokens) / num_layers


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
