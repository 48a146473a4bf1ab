"""One builder of random-weight LLaVA-1.5-style models from their widths.

CLIP vision tower -> MLP projector (Linear-GELU-Linear, ``vision_hidden -> hidden -> hidden``) ->
Llama language model (untied ``lm_head``); with ``image_grid_pinpoints`` (:func:`llava_next_config`)
the same widths make a LLaVA-NeXT (anyres) model. Used by the tiny test checkpoints
(:mod:`zooprune.testing.tiny`), the synthetic bench models (:mod:`zooprune.bench.synthetic`) and
the testbed model before training (:mod:`zooprune.testbed.model`); each passes its own widths.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    PreTrainedTokenizerFast,
)


@dataclass(frozen=True)
class LlavaShape:
    """Widths and depths of a LLaVA-1.5-style model (defaults: LLaVA-1.5-7B).

    Attributes:
        image_size, patch_size: the vision tower sees ``(image_size // patch_size) ** 2`` patches.
        vision_hidden, vision_intermediate, vision_layers, vision_heads: the CLIP tower.
        hidden, intermediate, layers, heads, kv_heads: the Llama language model.
        vocab: language-model vocabulary size (at least the tokenizer's length).
    """

    image_size: int = 336
    patch_size: int = 14
    vision_hidden: int = 1024
    vision_intermediate: int = 4096
    vision_layers: int = 24
    vision_heads: int = 16
    hidden: int = 4096
    intermediate: int = 11008
    layers: int = 32
    heads: int = 32
    kv_heads: int = 32
    vocab: int = 32000

    @property
    def num_visual_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


#: :class:`LlavaShape` field -> ``CLIPVisionConfig`` attribute.
VISION_FIELDS = {
    "image_size": "image_size",
    "patch_size": "patch_size",
    "vision_hidden": "hidden_size",
    "vision_intermediate": "intermediate_size",
    "vision_layers": "num_hidden_layers",
    "vision_heads": "num_attention_heads",
}
#: :class:`LlavaShape` field -> language-model config attribute (Llama, Qwen2, Gemma 3 alike).
TEXT_FIELDS = {
    "vocab": "vocab_size",
    "hidden": "hidden_size",
    "intermediate": "intermediate_size",
    "layers": "num_hidden_layers",
    "heads": "num_attention_heads",
    "kv_heads": "num_key_value_heads",
}


def vision_widths(shape: LlavaShape) -> dict[str, int]:
    """``shape``'s vision-tower widths under their HF config names."""
    return {hf: getattr(shape, name) for name, hf in VISION_FIELDS.items()}


def text_widths(shape: LlavaShape) -> dict[str, int]:
    """``shape``'s language-model widths under their HF config names."""
    return {hf: getattr(shape, name) for name, hf in TEXT_FIELDS.items()}


def vision_config(shape: LlavaShape, **extra: int) -> CLIPVisionConfig:
    """The CLIP vision-tower config of ``shape`` (``extra``: e.g. ``projection_dim``)."""
    return CLIPVisionConfig(**vision_widths(shape), hidden_act="quick_gelu", **extra)


def text_config(shape: LlavaShape, tokenizer: PreTrainedTokenizerFast, max_positions: int = 512) -> LlamaConfig:
    """The Llama config of ``shape``, special-token ids taken from ``tokenizer``."""
    return LlamaConfig(
        **text_widths(shape),
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def llava_config(
    shape: LlavaShape,
    tokenizer: PreTrainedTokenizerFast,
    *,
    feature_layer: int = -2,
    max_positions: int = 512,
    image_seq_length: int | None = None,
    **vision_extra: int,
) -> LlavaConfig:
    """The full model config: visual tokens are layer ``feature_layer``'s patch outputs (CLS dropped).

    ``image_seq_length`` is written into the config only when given (else the HF default stays).
    """
    extra = {} if image_seq_length is None else {"image_seq_length": image_seq_length}
    return LlavaConfig(
        vision_config=vision_config(shape, **vision_extra),
        text_config=text_config(shape, tokenizer, max_positions),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=feature_layer,
        tie_word_embeddings=False,
        **extra,
    )


def llava_next_config(
    shape: LlavaShape,
    tokenizer: PreTrainedTokenizerFast,
    pinpoints: list[list[int]],
    *,
    max_positions: int = 512,
) -> LlavaNextConfig:
    """The LLaVA-NeXT config of ``shape``: the same tower, projector and language model as
    :func:`llava_config`, plus anyres ``pinpoints`` (``[[height, width], ...]`` in pixels, multiples
    of ``shape.image_size``); layer -2 patch outputs, CLS dropped (llava-v1.6's settings)."""
    return LlavaNextConfig(
        vision_config=vision_config(shape),
        text_config=text_config(shape, tokenizer, max_positions),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=[list(p) for p in pinpoints],
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )


def build_llava(
    config: LlavaConfig | LlavaNextConfig,
    tokenizer: PreTrainedTokenizerFast,
    seed: int,
    device: str | torch.device | None = None,
) -> LlavaForConditionalGeneration | LlavaNextForConditionalGeneration:
    """A fresh ``LlavaForConditionalGeneration(config)`` (``LlavaNextForConditionalGeneration`` for a
    ``LlavaNextConfig``), weights drawn after ``torch.manual_seed(seed)`` (on ``device`` when given:
    a 7B model is initialised there directly), with the tokenizer's pad / eos ids in its generation
    config. Left in the mode HF builds it in (training); callers that only run it call ``.eval()``."""
    model_cls = LlavaNextForConditionalGeneration if isinstance(config, LlavaNextConfig) else LlavaForConditionalGeneration
    torch.manual_seed(seed)
    with torch.device(device) if device is not None else nullcontext():
        model = model_cls(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model

