"""``pyramiddrop``: in-LLM pruning in stages (default: at 1/4, 1/2 and 3/4 of the depth), each keeping
the visual tokens the last instruction token attends to most at the stage's first layer.

PyramidDrop (Xing et al., "PyramidDrop: Accelerating Your Large Vision-Language Models via Pyramid
Visual Redundancy Reduction", CVPR 2025); semantics follow Cooperx521/PyramidDrop
``llava/model/modeling_llama_pdrop.py``: ``LlamaModel.pdrop_forward`` (after decoder layer
``K - 1`` with ``K`` in ``layer_list``, rank and drop during prefill) and ``pdrop_rank_drop`` (the
rank): the hidden states entering layer ``K`` go through layer K's ``input_layernorm``,
``q_proj`` / ``k_proj`` and RoPE; the last instruction token's query attends (softmax over every
current token, float32) to the current visual tokens, heads averaged; the top
``int(N * ratio_list[stage + 1])`` of the image's original N tokens are kept (``layer_list
[8, 16, 24]``, ``image_token_ratio_list`` = lambda^s with lambda = 0.5 on the 32-layer LLaVA-1.5-7B).
Each stage ranks only the tokens the previous stage kept.

Shapes: ``ctx.llm_next_attention`` ``(N,)``: that attention for the N visual tokens still present
(the in-LLM plan computes it at layer ``K_s`` itself, ``InLLMStages.llm_fields``); returns the top
``k`` of them.

Deliberate deviations:
- Budget: ``keep`` sets the tokens left after the *last* stage (as for FastV / DART, so one budget
  means the same for every method); earlier stages keep ``max(k, int(N * ratio^(s+1)))``. The
  reference's last stage keeps ``int(N * ratio^S)`` (72 of 576 at lambda = 0.5): ``keep=72`` (or
  ``keep=0.125``) reproduces the paper's default schedule 288 / 144 / 72 at layers 8 / 16 / 24.
  ``equivalent_tokens`` reports the layer-averaged count.
- Default layers: the reference's ``[8, 16, 24]`` scaled to the model's depth (1/4, 1/2, 3/4,
  rounded, duplicates dropped: ``(1, 2)`` on a 3-layer model); ``layers`` sets them.
- Positions: kept tokens keep their original position ids (the mechanism of ``adapters/in_llm.py``);
  the reference renumbers the remaining tokens 0..L_s-1 after each drop (and shifts the decoding
  positions by the dropped count), so its RoPE distances between text and kept visual tokens
  shrink. ``fidelity="reference"`` therefore raises.
- Attention logits in float32 (the reference: the model dtype, softmax in float32).
- Batches: any size, ragged included (rows keeping different counts at a stage are left-padded with
  slots the attention mask hides, ``adapters/in_llm.py``; batch == one by one; SDPA or eager).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..tensors import sorted_unique
from .base import PruneContext, Selection, register_method
from .options import InLLMStages


def parse_layers(value: object) -> tuple[int, ...] | None:
    """``"8,16,24"`` / ``[8, 16, 24]`` / ``(8, 16, 24)`` as a tuple of ints (None stays None)."""
    if value is None:
        return None
    parts = value.replace(" ", "").split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    try:
        layers = tuple(int(p) for p in parts if p != "")
    except (TypeError, ValueError):
        raise ValueError(f"layers must be integers like '8,16,24', got {value!r}") from None
    if not layers:
        raise ValueError("layers must name at least one layer")
    if layers[0] < 1 or any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"layers must be >= 1 and strictly increasing, got {list(layers)}")
    return layers


def scaled_layers(reference: tuple[int, ...], reference_depth: int, num_layers: int) -> tuple[int, ...]:
    """The reference's layers for a ``reference_depth``-layer model at the same relative depths of a
    ``num_layers``-layer one (rounded half up, clamped to ``[1, num_layers - 1]``, duplicates dropped)."""
    top = max(1, num_layers - 1)
    scaled = (min(top, max(1, (k * num_layers + reference_depth // 2) // reference_depth)) for k in reference)
    return tuple(sorted(set(scaled)))


#: Cooperx521/PyramidDrop's ``--layer_list '[8,16,24]'`` for the 32-layer LLaVA-1.5-7B.
REFERENCE_LAYERS = (8, 16, 24)
REFERENCE_DEPTH = 32


@dataclass(frozen=True)
class PyramidDropOptions(InLLMStages):
    """Options of ``pyramiddrop``.

    Attributes:
        layers: ``K_1 < ... < K_S``, the layers from which each stage's tokens alone go on (a tuple or
            ``"8,16,24"``); None = the reference's ``[8, 16, 24]`` scaled to the model's depth.
        ratio: lambda, each stage keeps ``ratio`` times the tokens of the one before (of the image's N),
            the last stage the budget k; in ``(0, 1]``.
    """

    layers: tuple[int, ...] | None = None
    ratio: float = 0.5

    llm_fields = frozenset({"llm_next_attention"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", parse_layers(self.layers))
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")

    def stage_layers(self, num_layers: int) -> tuple[int, ...]:
        return self.layers if self.layers is not None else scaled_layers(REFERENCE_LAYERS, REFERENCE_DEPTH, num_layers)

    def stage_keep(self, n: int, k: int, stage: int, num_stages: int) -> int:
        if stage >= num_stages - 1:
            return k
        return max(k, int(n * self.ratio ** (stage + 1)))


@register_method(
    "pyramiddrop",
    needs=("llm_layer",),
    stage="in_llm",
    summary="PyramidDrop: drop visual tokens in stages (LLM layers 8/16/24 of 32) by last-token attention (in-LLM)",
    options=PyramidDropOptions,
    reference_unsupported="the reference (Cooperx521/PyramidDrop, pdrop_forward / pdrop_rank_drop) renumbers "
    "the remaining tokens' positions after each drop; zooprune keeps original positions",
)
def pyramiddrop(ctx: PruneContext, k: int) -> Selection:
    """Keep the ``k`` visual tokens with the largest ``ctx.llm_next_attention`` ``(N,)``."""
    ctx.require("llm_next_attention", method="pyramiddrop")
    scores = ctx.llm_next_attention.float()  # (N,)
    return Selection(indices=sorted_unique(scores.topk(k).indices), scores=scores)
