"""Tiny random but complete HF checkpoints (weights + processor + tokenizer + chat template), offline.

Used by the tests, by benchmarks and by anyone who wants to exercise the real loading path
(``save_pretrained`` -> ``zooprune.load``) without downloading weights. Attention projections
are scaled up after a fixed seed so attention is far from uniform: outputs then depend on
which visual tokens are present, so equivalence tests can fail.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextProcessor,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from ..hf_layout import to_llava_hf_layout
from .llava import LlavaShape, build_llava, llava_config, text_config, text_widths, vision_config

SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
WORDS = (
    "USER: ASSISTANT: what is in the image ? describe this picture a an of on left right top bottom "
    "red green blue yellow circle square triangle star yes no how many one two three four five "
    "color colour shape is there are which answer with word letter A B C D . , :"
).split()

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% else %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}{{ c['text'] }}{% endfor %}{% endif %}</s> "
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def word_tokenizer(
    words: list[str] = WORDS,
    image_token: str = "<image>",
    extra_special: tuple[str, ...] = (),
    named: dict[str, str] | None = None,
) -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer over special tokens + ``words`` (whitespace-split, built offline)."""
    special = SPECIAL_TOKENS[:4] + [image_token, *extra_special]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(special + list(words)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": image_token, **(named or {})},
        padding_side="left",
    )
    tok.add_special_tokens({"additional_special_tokens": [image_token, *extra_special]})
    return tok


def sharpen_attention(model: torch.nn.Module, factor: float = 4.0) -> None:
    """Multiply every q/k projection weight by ``factor`` (random-init attention is near uniform)."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(("q_proj", "k_proj")) and isinstance(module, torch.nn.Linear):
                module.weight.mul_(factor)


def tiny_shape(
    tokenizer: PreTrainedTokenizerFast, image_size: int = 32, patch_size: int = 8, hidden: int = 64
) -> LlavaShape:
    """Tiny widths: a 3-layer CLIP (32 wide) and a 3-layer Llama (``hidden`` wide, GQA 4 / 2 heads)."""
    return LlavaShape(
        image_size=image_size,
        patch_size=patch_size,
        vision_hidden=32,
        vision_intermediate=64,
        vision_layers=3,
        vision_heads=4,
        hidden=hidden,
        intermediate=2 * hidden,
        layers=3,
        heads=4,
        kv_heads=2,
        vocab=len(tokenizer),
    )


def tiny_siglip(layers: int) -> SiglipVisionConfig:
    """A tiny SigLIP tower (56 px, patch 14 -> 16 patches, 32 wide) with ``layers`` layers."""
    return SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        image_size=56,
        patch_size=14,
    )


def finish(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast) -> torch.nn.Module:
    """Eval mode, sharpened attention, generation ids set."""
    model.eval()
    sharpen_attention(model)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def llava_processor(tokenizer: PreTrainedTokenizerFast, image_size: int, patch_size: int) -> LlavaProcessor:
    """A LLaVA processor: CLIP resize + center crop to ``image_size``, one ``<image>`` per patch."""
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def tiny_llava(
    seed: int = 0, image_size: int = 32, patch_size: int = 8, hidden: int = 64
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A random ``LlavaForConditionalGeneration`` ((image_size/patch_size)^2 visual tokens) and its processor."""
    tokenizer = word_tokenizer()
    config = llava_config(tiny_shape(tokenizer, image_size, patch_size, hidden), tokenizer)
    model = finish(build_llava(config, tokenizer, seed), tokenizer)
    return model, llava_processor(tokenizer, image_size, patch_size)


#: anyres resolutions of the tiny LLaVA-NeXT (56 px crops of 4 x 4 tokens each).
NEXT_PINPOINTS = [[56, 112], [112, 56], [112, 112], [112, 168], [168, 112]]


def tiny_llava_next(seed: int = 0) -> tuple[LlavaNextForConditionalGeneration, LlavaNextProcessor]:
    """A random ``LlavaNextForConditionalGeneration`` (anyres: base + crops of 56 px, 16 tokens each)."""
    tokenizer = word_tokenizer()
    shape = tiny_shape(tokenizer, 56, 14)
    config = LlavaNextConfig(
        vision_config=vision_config(shape),
        text_config=text_config(shape, tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=NEXT_PINPOINTS,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = finish(LlavaNextForConditionalGeneration(config), tokenizer)
    with torch.no_grad():
        model.model.image_newline.normal_(0, 1)  # a distinctive newline embedding
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}, image_grid_pinpoints=NEXT_PINPOINTS
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


QWEN_CHAT_TEMPLATE = CHAT_TEMPLATE.replace("<image>\n", "<|vision_start|><|image_pad|><|vision_end|>")


def tiny_qwen2_vl(seed: int = 0, family: str = "qwen2_vl") -> tuple[torch.nn.Module, object]:
    """A random Qwen2-VL (or Qwen2.5-VL with ``family="qwen2_5_vl"``) and its processor (image-only
    without torchvision, see compat.py; 56..224 px images, 14 px patches merged 2 x 2)."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from ..compat import family_processor

    tokenizer = word_tokenizer(
        image_token="<|image_pad|>", extra_special=("<|vision_start|>", "<|vision_end|>", "<|video_pad|>")
    )
    ids = tokenizer.convert_tokens_to_ids
    text = {
        **text_widths(tiny_shape(tokenizer)),
        "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "depth": 2,
        "embed_dim": 32,
        "hidden_size": 64,
        "num_heads": 4,
        "patch_size": 14,
        "spatial_merge_size": 2,
    }
    special = {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }
    if family == "qwen2_5_vl":
        vision.update(
            {
                "out_hidden_size": 64,
                "hidden_size": 32,
                "intermediate_size": 64,
                "window_size": 56,
                "fullatt_block_indexes": [1],
            }
        )
        vision.pop("embed_dim")
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special)
        model_cls = Qwen2_5_VLForConditionalGeneration
    else:
        config = Qwen2VLConfig(text_config=text, vision_config=vision, **special)
        model_cls = Qwen2VLForConditionalGeneration
    torch.manual_seed(seed)
    model = finish(model_cls(config), tokenizer)
    image_processor = Qwen2VLImageProcessorPil(size={"shortest_edge": 56 * 56, "longest_edge": 224 * 224})
    processor = family_processor(family, image_processor, tokenizer, chat_template=QWEN_CHAT_TEMPLATE)
    return model, processor


def tiny_qwen2_5_vl(seed: int = 0) -> tuple[torch.nn.Module, object]:
    return tiny_qwen2_vl(seed, family="qwen2_5_vl")


def tiny_internvl(seed: int = 0) -> tuple[torch.nn.Module, object]:
    """A random InternVL (112 px tiles, 14 px patches, pixel shuffle 0.5 -> 16 tokens per tile; up to
    4 tiles + a thumbnail) and its processor (image-only without torchvision)."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    from ..compat import family_processor

    names = {
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    }
    tokenizer = word_tokenizer(
        image_token="<IMG_CONTEXT>", extra_special=("<img>", "</img>", "<video>"), named=names
    )
    vision = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "image_size": [112, 112],
        "patch_size": [14, 14],
    }
    config = InternVLConfig(
        vision_config=vision,
        text_config=text_config(tiny_shape(tokenizer), tokenizer).to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=16,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = finish(InternVLForConditionalGeneration(config), tokenizer)
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": 112, "width": 112}, crop_to_patches=True, min_patches=1, max_patches=4
    )
    processor = family_processor(
        "internvl",
        image_processor,
        tokenizer,
        image_seq_length=16,
        chat_template=CHAT_TEMPLATE.replace("<image>", "<IMG_CONTEXT>"),
    )
    return model, processor


def tiny_llava_onevision(seed: int = 0) -> tuple[torch.nn.Module, object]:
    """A random LLaVA-OneVision (SigLIP 56 px crops of 16 tokens, strategy "full", anyres_max_9)."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    from ..compat import family_processor

    tokenizer = word_tokenizer()
    vision = tiny_siglip(layers=3)
    config = LlavaOnevisionConfig(
        vision_config=vision.to_dict(),
        text_config=text_config(tiny_shape(tokenizer), tokenizer).to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=NEXT_PINPOINTS,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = finish(LlavaOnevisionForConditionalGeneration(config), tokenizer)
    with torch.no_grad():
        model.model.image_newline.normal_(0, 1)
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": 56, "width": 56}, image_grid_pinpoints=NEXT_PINPOINTS
    )
    processor = family_processor(
        "llava_onevision",
        image_processor,
        tokenizer,
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


def tiny_gemma3(seed: int = 0) -> tuple[torch.nn.Module, object]:
    """A random Gemma 3 (SigLIP 56 px, 16 patches pooled to 4 image tokens) and its processor."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    names = {
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
        "image_token": "<image_soft_token>",
    }
    tokenizer = word_tokenizer(
        image_token="<image_soft_token>", extra_special=("<start_of_image>", "<end_of_image>"), named=names
    )
    ids = tokenizer.convert_tokens_to_ids
    text = {
        **text_widths(tiny_shape(tokenizer)),
        "head_dim": 16,
        "sliding_window": 512,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = tiny_siglip(layers=2)
    config = Gemma3Config(
        text_config=text,
        vision_config=vision.to_dict(),
        mm_tokens_per_image=4,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = finish(Gemma3ForConditionalGeneration(config), tokenizer)
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.2)  # zeros at init
    image_processor = Gemma3ImageProcessorPil(size={"height": 56, "width": 56})
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=4,
        chat_template=CHAT_TEMPLATE.replace("<image>", "<start_of_image>"),
    )
    return model, processor


BUILDERS = {
    "gemma3": tiny_gemma3,
    "internvl": tiny_internvl,
    "llava_onevision": tiny_llava_onevision,
    "llava": tiny_llava,
    "llava_next": tiny_llava_next,
    "qwen2_vl": tiny_qwen2_vl,
    "qwen2_5_vl": tiny_qwen2_5_vl,
}


def save_tiny_llava(path: str | Path, seed: int = 0, family: str = "llava") -> Path:
    """Build the tiny model of ``family`` and ``save_pretrained`` weights + processor into ``path``."""
    path = Path(path)
    model, processor = BUILDERS[family](seed=seed)
    model.save_pretrained(path)
    to_llava_hf_layout(path)  # the layout the hub ships and vLLM loads (transformers reads both)
    processor.save_pretrained(path)
    return path
