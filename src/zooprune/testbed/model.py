"""The testbed architecture: a small HF ``LlavaForConditionalGeneration``.

CLIP vision tower (224 px, patch 16 -> 14x14 = 196 patch tokens + CLS; hidden 128, 4 layers),
the standard LLaVA projector (Linear-GELU-Linear, 128 -> 192 -> 192), and a Llama language
model (hidden 192, 4 layers, untied lm_head). Visual tokens are the last encoder layer's patch
outputs (``vision_feature_layer=-1``, strategy ``"default"`` drops CLS).
"""

from __future__ import annotations

from dataclasses import replace

from transformers import LlavaConfig, LlavaForConditionalGeneration, PreTrainedTokenizerFast

from ..testing.llava import LlavaShape, build_llava, llava_config
from .processor import IMAGE_SIZE, PATCH_SIZE

VISION_HIDDEN = 128
TEXT_HIDDEN = 192
NUM_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
FEATURE_LAYER = -1
#: the testbed's widths; ``vocab`` is set from the tokenizer in :func:`build_config`.
SHAPE = LlavaShape(
    image_size=IMAGE_SIZE,
    patch_size=PATCH_SIZE,
    vision_hidden=VISION_HIDDEN,
    vision_intermediate=4 * VISION_HIDDEN,
    vision_layers=4,
    vision_heads=2,
    hidden=TEXT_HIDDEN,
    intermediate=512,
    layers=4,
    heads=4,
    kv_heads=4,
    vocab=0,
)


def build_config(tokenizer: PreTrainedTokenizerFast) -> LlavaConfig:
    """The model config, with the vocabulary size and token ids taken from ``tokenizer``."""
    return llava_config(
        replace(SHAPE, vocab=len(tokenizer)),
        tokenizer,
        feature_layer=FEATURE_LAYER,
        image_seq_length=NUM_IMAGE_TOKENS,
    )


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int) -> LlavaForConditionalGeneration:
    """A freshly initialised model (weights drawn from ``seed``; training mode), greedy 3-token answers."""
    model = build_llava(build_config(tokenizer), tokenizer, seed)
    gc = model.generation_config
    gc.bos_token_id = tokenizer.bos_token_id
    gc.do_sample = False
    gc.max_new_tokens = 3
    return model
