"""Offline tokenizer, image processor and chat template of the testbed LLaVA.

Prompt format (LLaVA-1.5 style, made by the processor's own chat template)::

    <s> USER : <image> <question words> ASSISTANT :      -> model answers "<word> </s>"

The processor expands ``<image>`` to 196 image tokens (224 px / patch 16, CLS dropped).
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

from .questions import vocabulary

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
ROLE_WORDS: tuple[str, ...] = ("USER", "ASSISTANT", ":")
PATCH_SIZE = 16
IMAGE_SIZE = 224

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tokenizer(vocab_words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer over the generator's vocabulary (v1's unless ``vocab_words``); adds ``<s>``."""
    plain = vocabulary() if vocab_words is None else vocab_words
    words = list(SPECIAL_TOKENS) + list(ROLE_WORDS) + [w for w in plain if w not in ROLE_WORDS]
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
        model_max_length=512,
    )


def build_processor(vocab_words: list[str] | None = None) -> LlavaProcessor:
    """The full processor: CLIP image processing at 224 px and the tokenizer above."""
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=True,
        do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(vocab_words),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
        image_token="<image>",
    )
