"""Random-weight LLaVA models with real widths, built from a config (no downloads).

``"llava-1.5-7b"``: CLIP ViT-L/14 at 336 px (1024 wide, 24 layers, 16 heads, 4096 MLP; 576
tokens from the penultimate layer) -> MLP projector 1024 -> 4096 -> 4096 (GELU) -> Llama-7B
(4096 wide, 32 layers, 32 heads, FFN 11008, vocab 32000). Depth is reducible for CPU with
``"llava-1.5-7b,layers=2"`` (language-model layers) and ``vision_layers=N``; any width can be
overridden the same way (the tests use ``"tiny"``). The tokenizer is the offline word-level one
of :mod:`zooprune.testing.tiny`, padded to the vocabulary size of the shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from ..testing.llava import VISION_FIELDS, LlavaShape, build_llava, llava_config
from ..testing.tiny import llava_processor, word_tokenizer
from .flops import LMShape, lm_shape


@dataclass(frozen=True)
class Shape(LlavaShape):
    """:class:`~zooprune.testing.llava.LlavaShape` (default: LLaVA-1.5-7B) and the real depth."""

    full_layers: int = 32  # depth of the real model, for extrapolation when ``layers`` is reduced

    def lm(self, layers: int | None = None) -> LMShape:
        """The language model's widths (``layers`` defaults to the built depth)."""
        return LMShape(
            self.hidden,
            self.intermediate,
            self.layers if layers is None else layers,
            self.heads,
            self.kv_heads,
            self.vocab,
        )


PRESETS: dict[str, Shape] = {
    "llava-1.5-7b": Shape(),
    "llava-1.5-13b": Shape(hidden=5120, intermediate=13824, layers=40, heads=40, kv_heads=40, full_layers=40),
    "tiny": Shape(
        image_size=32,
        patch_size=8,
        vision_hidden=32,
        vision_intermediate=64,
        vision_layers=2,
        vision_heads=4,
        hidden=64,
        intermediate=128,
        layers=2,
        heads=4,
        kv_heads=2,
        vocab=128,
        full_layers=2,
    ),
}


def parse_shape(spec: str) -> tuple[str, Shape]:
    """``"llava-1.5-7b,layers=2,vision_layers=4"`` -> (preset name, :class:`Shape`)."""
    name, *overrides = [part.strip() for part in spec.split(",") if part.strip()]
    if name not in PRESETS:
        raise ValueError(f"unknown synthetic shape {name!r}; choose from {', '.join(PRESETS)}")
    known = {f.name for f in fields(Shape)} - {"full_layers"}
    changes: dict[str, int] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise ValueError(
                f"bad shape override {item!r}; use KEY=INT with KEY in {', '.join(sorted(known))}"
            )
        try:
            changes[key] = int(value)
        except ValueError:
            raise ValueError(f"shape override {item!r}: {value!r} is not an integer") from None
        if changes[key] < 1:
            raise ValueError(f"shape override {item!r} must be >= 1")
    return name, replace(PRESETS[name], **changes)


def synthetic_llava(
    shape: Shape, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A random-weight ``LlavaForConditionalGeneration`` with ``shape``'s widths, and a processor."""
    tokenizer = word_tokenizer()
    if shape.vocab < len(tokenizer):
        raise ValueError(
            f"vocab={shape.vocab} is smaller than the offline tokenizer ({len(tokenizer)} tokens)"
        )
    config = llava_config(shape, tokenizer, max_positions=4096, projection_dim=768)
    model = build_llava(config, tokenizer, seed).to(dtype).eval()
    return model, llava_processor(tokenizer, shape.image_size, shape.patch_size)


def shape_of_model(model: Any) -> Shape:
    """The :class:`Shape` of a loaded LLaVA model (for FLOPs and KV-cache sizes of ``--model``)."""
    vision, lm = model.config.vision_config, lm_shape(model.config)
    widths = {name: getattr(vision, hf) for name, hf in VISION_FIELDS.items()}
    return Shape(**widths, **asdict(lm), full_layers=lm.layers)


def shape_dict(shape: Shape) -> dict[str, int]:
    return asdict(shape)
