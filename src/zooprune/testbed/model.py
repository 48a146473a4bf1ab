"""The testbed architecture: a small HF ``LlavaForConditionalGeneration``.

CLIP vision tower (224 px, patch 16 -> 14x14 = 196 patch tokens + CLS; hidden 128, 4 layers),
the standard LLaVA projector (Linear-GELU-Linear, 128 -> 192 -> 192), and a Llama language
model (hidden 192, 4 layers, untied lm_head). Visual tokens are the last encoder layer's patch
outputs (``vision_feature_layer=-1``, strategy ``"default"`` drops CLS).
"""

from __future__ import annotations

from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from .processor import IMAGE_SIZE, PATCH_SIZE

VISION_HIDDEN = 128
TEXT_HIDDEN = 192
NUM_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
FEATURE_LAYER = -1


def build_config(tokenizer: PreTrainedTokenizerFast) -> LlavaConfig:
    """The model config, with token ids taken from ``tokenizer``."""
    vision = CLIPVisionConfig(
        hidden_size=VISION_HIDDEN,
        intermediate_size=4 * VISION_HIDDEN,
        num_hidden_layers=4,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        hidden_act="quick_gelu",
    )
    vocab = len(tokenizer)
    text = LlamaConfig(
        vocab_size=vocab,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=FEATURE_LAYER,
        image_seq_length=NUM_IMAGE_TOKENS,
        tie_word_embeddings=False,
    )


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int) -> LlavaForConditionalGeneration:
    """A freshly initialised model (weights drawn from ``seed``)."""
    import torch

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(build_config(tokenizer))
    gc = model.generation_config
    gc.bos_token_id = tokenizer.bos_token_id
    gc.eos_token_id = tokenizer.eos_token_id
    gc.pad_token_id = tokenizer.pad_token_id
    gc.do_sample = False
    gc.max_new_tokens = 3
    return model
