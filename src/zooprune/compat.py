"""Loading processors when torchvision is absent (CPU-only installs).

In transformers 5.x the Qwen2-VL / Qwen2.5-VL, InternVL and LLaVA-OneVision processors also
build a *video* processor, which needs torchvision; without it even image-only use fails. The
``ImageOnly*`` classes are the same processors with the video part left out: images and text
are processed exactly as by the stock class (same image processor, same placeholder
expansion). Real GPU installs, which have torchvision, never reach this fallback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import InternVLProcessor, LlavaOnevisionProcessor, Qwen2VLProcessor


class NoVideo:
    """Mixin: build the processor with ``video_processor=None`` (images + text only)."""

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(  # type: ignore[call-arg]
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )


class ImageOnlyQwen2VLProcessor(NoVideo, Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without a video processor."""


class ImageOnlyInternVLProcessor(NoVideo, InternVLProcessor):
    """``InternVLProcessor`` without a video processor."""


class ImageOnlyLlavaOnevisionProcessor(NoVideo, LlavaOnevisionProcessor):
    """``LlavaOnevisionProcessor`` without a video processor."""


#: model types whose stock processor needs torchvision (its video part) -> image-only stand-in.
IMAGE_ONLY = {
    "qwen2_vl": ImageOnlyQwen2VLProcessor,
    "qwen2_5_vl": ImageOnlyQwen2VLProcessor,
    "internvl": ImageOnlyInternVLProcessor,
    "llava_onevision": ImageOnlyLlavaOnevisionProcessor,
}


def load_processor(path: str, model_type: str, trust_remote_code: bool = False) -> Any:
    """``AutoProcessor.from_pretrained``, or the image-only stand-in when the stock processor needs
    torchvision that is not installed (its saved settings are passed on)."""
    import json

    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer
    from transformers.utils import is_torchvision_available

    if model_type not in IMAGE_ONLY or is_torchvision_available():
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    folder = Path(path)
    settings: dict[str, Any] = {}
    if (folder / "processor_config.json").is_file():
        saved = json.loads((folder / "processor_config.json").read_text())
        skip = {"image_processor", "video_processor", "processor_class", "auto_map"}
        settings = {k: v for k, v in saved.items() if k not in skip}
    if (
        model_type == "internvl" and (folder / "config.json").is_file()
    ):  # tokens per tile, as the model expects
        settings.setdefault(
            "image_seq_length", json.loads((folder / "config.json").read_text()).get("image_seq_length", 256)
        )
    if model_type == "llava_onevision" and (folder / "config.json").is_file():  # settings the model implies
        config = json.loads((folder / "config.json").read_text())
        vision = config.get("vision_config", {})
        strategy = config.get("vision_feature_select_strategy", "full")
        tokens = (vision.get("image_size", 384) // vision.get("patch_size", 14)) ** 2
        settings.setdefault("num_image_tokens", tokens + (1 if strategy == "default" else 0))
        settings.setdefault("vision_feature_select_strategy", strategy)
        settings.setdefault("vision_aspect_ratio", config.get("vision_aspect_ratio", "anyres_max_9"))
    template = folder / "chat_template.jinja"
    return IMAGE_ONLY[model_type](
        image_processor=AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code),
        tokenizer=AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code),
        chat_template=template.read_text() if template.is_file() else None,
        **settings,
    )
