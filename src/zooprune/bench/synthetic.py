"""Random-weight LLaVA models with real widths, built from a config (no downloads).

``"llava-1.5-7b"``: CLIP ViT-L/14 at 336 px (1024 wide, 24 layers, 16 heads, 4096 MLP; 576
tokens from the penultimate layer) -> MLP projector 1024 -> 4096 -> 4096 (GELU) -> Llama-7B
(4096 wide, 32 layers, 32 heads, FFN 11008, vocab 32000). Depth is reducible for CPU with
``"llava-1.5-7b,layers=2"`` (language-model layers) and ``vision_layers=N``; any width can be
overridden the same way (the tests use ``"tiny"``). The tokenizer is the offline word-level one
of :mod:`zooprune.testing.tiny`, padded to the vocabulary size of the shape.

``"llava-next-7b"``: llava-hf/llava-v1.6-vicuna-7b's geometry on the same widths (Vicuna-7B =
Llama-7B widths, 4096 positions): a ``LlavaNextForConditionalGeneration`` with anyres pinpoints
336x672, 672x336, 672x672, 1008x336, 336x1008 and a bench image of 672 x 672 px, which the
processor cuts into a 2 x 2 grid of 336 px crops plus the base image: 5 x 576 = 2,880 budgeted
tokens; ``pack_image_features`` then adds one image-newline token per high-res row (48, no
unpadding for a square image), so the language model sees 2,928 visual positions.
``"llava-next-tiny"`` has the same geometry rules at 1/6 scale (56 px crops of 4 x 4 tokens).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from types import SimpleNamespace
from typing import Any

import torch
from transformers import LlavaNextProcessor, LlavaProcessor
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from ..testing.llava import VISION_FIELDS, LlavaShape, build_llava, llava_config, llava_next_config
from ..testing.tiny import CHAT_TEMPLATE, llava_processor, word_tokenizer
from .flops import LMShape, lm_shape

#: ``image_grid_pinpoints`` of llava-hf/llava-v1.6-vicuna-7b (``[height, width]`` in pixels).
V16_PINPOINTS: tuple[tuple[int, int], ...] = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))


@dataclass(frozen=True)
class Shape(LlavaShape):
    """:class:`~zooprune.testing.llava.LlavaShape` (default: LLaVA-1.5-7B), the real depth and,
    for LLaVA-NeXT, the anyres pinpoints and the bench image's side.

    Attributes:
        full_layers: depth of the real model, for extrapolation when ``layers`` is reduced.
        pinpoints: anyres resolutions ``((height, width), ...)``; empty = LLaVA-1.5 (one crop).
        image: side (px) of the square bench image; 0 = ``image_size`` (one crop).
    """

    full_layers: int = 32
    pinpoints: tuple[tuple[int, int], ...] = ()
    image: int = 0

    @property
    def anyres(self) -> bool:
        return bool(self.pinpoints)

    @property
    def image_side(self) -> int:
        """Side (px) of the square image the bench feeds the processor."""
        return self.image or self.image_size

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
    "llava-next-7b": Shape(pinpoints=V16_PINPOINTS, image=672),
    "llava-next-tiny": Shape(
        image_size=56,
        patch_size=14,
        vision_hidden=32,
        vision_intermediate=64,
        vision_layers=2,
        vision_heads=4,
        hidden=64,
        intermediate=128,
        layers=3,
        heads=4,
        kv_heads=2,
        vocab=128,
        full_layers=3,
        pinpoints=tuple((h // 6, w // 6) for h, w in V16_PINPOINTS),
        image=112,
    ),
}


def parse_shape(spec: str) -> tuple[str, Shape]:
    """``"llava-1.5-7b,layers=2,vision_layers=4"`` -> (preset name, :class:`Shape`)."""
    name, *overrides = [part.strip() for part in spec.split(",") if part.strip()]
    if name not in PRESETS:
        raise ValueError(f"unknown synthetic shape {name!r}; choose from {', '.join(PRESETS)}")
    known = {f.name for f in fields(Shape)} - {"full_layers", "pinpoints"}
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


def synthetic_config(shape: Shape, tokenizer: Any | None = None) -> Any:
    """The HF config of ``shape`` (``LlavaConfig``, or ``LlavaNextConfig`` with pinpoints); no weights."""
    tokenizer = tokenizer or word_tokenizer()
    if shape.vocab < len(tokenizer):
        raise ValueError(
            f"vocab={shape.vocab} is smaller than the offline tokenizer ({len(tokenizer)} tokens)"
        )
    if shape.anyres:
        return llava_next_config(shape, tokenizer, [list(p) for p in shape.pinpoints], max_positions=4096)
    return llava_config(shape, tokenizer, max_positions=4096, projection_dim=768)


def synthetic_processor(shape: Shape, tokenizer: Any | None = None) -> LlavaProcessor | LlavaNextProcessor:
    """The offline processor of ``shape``: LLaVA-1.5's (resize + center crop), or LLaVA-NeXT's anyres
    one (``shortest_edge`` and crop = the tower's ``image_size``, the shape's pinpoints; CLS counted
    and dropped as llava-v1.6 does)."""
    tokenizer = tokenizer or word_tokenizer()
    if not shape.anyres:
        return llava_processor(tokenizer, shape.image_size, shape.patch_size)
    side = shape.image_size
    pinpoints = [list(p) for p in shape.pinpoints]
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}, image_grid_pinpoints=pinpoints
    )
    return LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=shape.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def synthetic_llava(
    shape: Shape, seed: int = 0, dtype: torch.dtype = torch.float32, device: str | torch.device | None = None
) -> tuple[Any, LlavaProcessor | LlavaNextProcessor]:
    """A random-weight ``LlavaForConditionalGeneration`` (``LlavaNextForConditionalGeneration`` for an
    anyres shape) with ``shape``'s widths, built on ``device`` (default: torch's), and its processor."""
    tokenizer = word_tokenizer()
    config = synthetic_config(shape, tokenizer)
    model = build_llava(config, tokenizer, seed, device=device).to(dtype).eval()
    return model, synthetic_processor(shape, tokenizer)


def anyres_counts(config: Any, height: int, width: int) -> tuple[int, int]:
    """(visual positions, image-newline tokens) a LLaVA-NeXT ``config`` packs a ``height`` x ``width``
    image into, from transformers' own ``LlavaNextModel.pack_image_features`` run on one-value
    dummy features (no model built: the packing reads only the config). Budgeted tokens are the
    difference. ``(N, 0)`` for a LLaVA-1.5 config."""
    vision = config.vision_config
    side = vision.image_size // vision.patch_size
    pinpoints = getattr(config, "image_grid_pinpoints", None)
    if not pinpoints:
        return side * side, 0
    from transformers.models.llava_next.modeling_llava_next import LlavaNextModel, image_size_to_num_patches

    size = torch.tensor([[height, width]])
    crops = image_size_to_num_patches(image_size=(height, width), grid_pinpoints=pinpoints, patch_size=vision.image_size)
    dummy = torch.zeros(crops, side * side, 1)
    marker = torch.tensor([-1.0])
    (packed,), _ = LlavaNextModel.pack_image_features(
        SimpleNamespace(config=config), [dummy], size, config.vision_feature_select_strategy, image_newline=marker
    )
    return int(packed.shape[0]), int((packed[:, 0] < 0).sum())


def shape_of_model(model: Any) -> Shape:
    """The :class:`Shape` of a loaded LLaVA model (for FLOPs and KV-cache sizes of ``--model``)."""
    vision, lm = model.config.vision_config, lm_shape(model.config)
    widths = {name: getattr(vision, hf) for name, hf in VISION_FIELDS.items()}
    pinpoints = tuple(tuple(p) for p in getattr(model.config, "image_grid_pinpoints", None) or ())
    squares = [h for h, w in pinpoints if h == w]
    image = max(squares) if squares else 0  # NeXT: the largest square pinpoint (all crops used)
    return Shape(**widths, **asdict(lm), full_layers=lm.layers, pinpoints=pinpoints, image=image)


def shape_dict(shape: Shape) -> dict[str, Any]:
    return {k: [list(p) for p in v] if k == "pinpoints" else v for k, v in asdict(shape).items()}
