"""Loading processors when torchvision is absent (CPU-only installs).

In transformers 5.x the Qwen2-VL / Qwen2.5-VL and InternVL processors also build a *video* processor, which
needs torchvision; without it even image-only use fails. :class:`ImageOnlyQwen2VLProcessor`
(and the InternVL one) is the same processor with the video part left out: images and text are processed exactly as
by the stock class (same image processor, same placeholder expansion). Real GPU installs,
which have torchvision, never reach this fallback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import InternVLProcessor, Qwen2VLProcessor


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


class ImageOnlyInternVLProcessor(InternVLProcessor):
    """``InternVLProcessor`` without a video processor (images + text only)."""

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


#: model types whose stock processor needs torchvision (its video part) -> image-only stand-in.
IMAGE_ONLY = {
    "qwen2_vl": ImageOnlyQwen2VLProcessor,
    "qwen2_5_vl": ImageOnlyQwen2VLProcessor,
    "internvl": ImageOnlyInternVLProcessor,
}


def load_processor(path: str, model_type: str, trust_remote_code: bool = False) -> Any:
    """``AutoProcessor.from_pretrained``, or the image-only Qwen processor when the stock one needs
    torchvision that is not installed."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer
    from transformers.utils import is_torchvision_available

    if model_type not in IMAGE_ONLY or is_torchvision_available():
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    template_file = Path(path) / "chat_template.jinja"
    extra = {}
    config_file = Path(path) / "config.json"
    if model_type == "internvl" and config_file.is_file():  # tokens per tile, as the model expects
        import json

        extra["image_seq_length"] = json.loads(config_file.read_text()).get("image_seq_length", 256)
    return IMAGE_ONLY[model_type](
        image_processor=AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code),
        tokenizer=AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code),
        chat_template=template_file.read_text() if template_file.is_file() else None,
        **extra,
    )
