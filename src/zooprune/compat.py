"""Loading processors when torchvision is absent (CPU-only installs).

In transformers 5.x the Qwen2-VL / Qwen2.5-VL processors also build a *video* processor, which
needs torchvision; without it even image-only use fails. :class:`ImageOnlyQwen2VLProcessor`
is the same processor with the video part left out: images and text are processed exactly as
by the stock class (same image processor, same placeholder expansion). Real GPU installs,
which have torchvision, never reach this fallback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import Qwen2VLProcessor

QWEN_TYPES = ("qwen2_vl", "qwen2_5_vl")


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without a video processor (images + text only)."""

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )


def load_processor(path: str, model_type: str, trust_remote_code: bool = False) -> Any:
    """``AutoProcessor.from_pretrained``, or the image-only Qwen processor when the stock one needs
    torchvision that is not installed."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer
    from transformers.utils import is_torchvision_available

    if model_type not in QWEN_TYPES or is_torchvision_available():
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    template_file = Path(path) / "chat_template.jinja"
    return ImageOnlyQwen2VLProcessor(
        image_processor=AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code),
        tokenizer=AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code),
        chat_template=template_file.read_text() if template_file.is_file() else None,
    )
