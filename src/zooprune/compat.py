"""Processors that work with and without torchvision, and checkpoints that load in both.

In transformers 5.x the Qwen2-VL / Qwen2.5-VL, InternVL and LLaVA-OneVision processors also
build a *video* processor, which needs torchvision; without it even image-only use fails. The
``ImageOnly*`` classes are the same processors with the video part left out: images and text
are processed exactly as by the stock class (same image processor, same placeholder
expansion). They are used only when torchvision is missing (CPU-only installs); where it is
installed (every GPU user) the stock class is built, with the family's default video processor.

Checkpoints cross environments in both directions:
- what an image-only processor saves is the stock layout: ``processor_class`` names the stock
  class and ``processor_config.json`` carries a ``video_processor`` entry (the family's video
  processor type plus the normalisation and patching it shares with the image processor), so
  stock ``AutoProcessor`` loads it where torchvision is installed;
- :func:`load_processor` reads a stock checkpoint (with its video processor) without torchvision,
  and an older image-only save (no video entry) with torchvision, and names what is missing when
  a checkpoint cannot be read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import InternVLProcessor, LlavaOnevisionProcessor, Qwen2VLProcessor

#: model types whose stock processor needs torchvision (its video part) -> (stock class, video processor type).
VIDEO_FAMILIES: dict[str, tuple[type, str]] = {
    "qwen2_vl": (Qwen2VLProcessor, "Qwen2VLVideoProcessor"),
    "qwen2_5_vl": (Qwen2VLProcessor, "Qwen2VLVideoProcessor"),
    "internvl": (InternVLProcessor, "InternVLVideoProcessor"),
    "llava_onevision": (LlavaOnevisionProcessor, "LlavaOnevisionVideoProcessor"),
}
#: image-processor settings a family's video processor shares (what it would save for them too).
SHARED_WITH_VIDEO = (
    "do_convert_rgb",
    "do_normalize",
    "do_rescale",
    "image_mean",
    "image_std",
    "rescale_factor",
    "patch_size",
    "merge_size",
    "temporal_patch_size",
)
PROCESSOR_FILE = "processor_config.json"


def torchvision_available() -> bool:
    from transformers.utils import is_torchvision_available

    return bool(is_torchvision_available())


class NoVideo:
    """Mixin: build the processor with ``video_processor=None`` (images + text only), and save it in
    the stock class's layout (see the module docstring)."""

    #: the stock processor class this one stands in for, and its family's video processor type
    stock: type
    video_processor_type: str

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("video_processor", None)
        super().__init__(  # type: ignore[call-arg]
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()  # type: ignore[misc]
        output["processor_class"] = self.stock.__name__
        image = output.get("image_processor") or {}
        output["video_processor"] = {
            "video_processor_type": self.video_processor_type,
            **{k: image[k] for k in SHARED_WITH_VIDEO if k in image},
        }
        return output

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> Any:
        out = super().save_pretrained(save_directory, **kwargs)  # type: ignore[misc]
        tokenizer_config = Path(save_directory) / "tokenizer_config.json"
        if tokenizer_config.is_file():  # the tokenizer records its processor class too
            data = json.loads(tokenizer_config.read_text())
            if "processor_class" in data:
                data["processor_class"] = self.stock.__name__
                tokenizer_config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return out


class ImageOnlyQwen2VLProcessor(NoVideo, Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without a video processor."""

    stock, video_processor_type = Qwen2VLProcessor, "Qwen2VLVideoProcessor"


class ImageOnlyInternVLProcessor(NoVideo, InternVLProcessor):
    """``InternVLProcessor`` without a video processor."""

    stock, video_processor_type = InternVLProcessor, "InternVLVideoProcessor"


class ImageOnlyLlavaOnevisionProcessor(NoVideo, LlavaOnevisionProcessor):
    """``LlavaOnevisionProcessor`` without a video processor."""

    stock, video_processor_type = LlavaOnevisionProcessor, "LlavaOnevisionVideoProcessor"


IMAGE_ONLY: dict[str, type] = {
    "qwen2_vl": ImageOnlyQwen2VLProcessor,
    "qwen2_5_vl": ImageOnlyQwen2VLProcessor,
    "internvl": ImageOnlyInternVLProcessor,
    "llava_onevision": ImageOnlyLlavaOnevisionProcessor,
}


def family_processor(model_type: str, image_processor: Any, tokenizer: Any, **settings: Any) -> Any:
    """The processor of a family whose stock class needs a video processor: the stock class with
    the family's default video processor where torchvision is installed, else the image-only class.
    ``settings``: the processor's other arguments (``chat_template``, ``image_seq_length``, ...)."""
    stock, video_type = VIDEO_FAMILIES[model_type]
    if not torchvision_available():
        return IMAGE_ONLY[model_type](image_processor=image_processor, tokenizer=tokenizer, **settings)
    import transformers

    video = getattr(transformers, video_type)()
    return stock(image_processor=image_processor, tokenizer=tokenizer, video_processor=video, **settings)


def load_processor(path: str, model_type: str, trust_remote_code: bool = False) -> Any:
    """The checkpoint's processor: ``AutoProcessor.from_pretrained`` when it can build it here, else
    the family's processor rebuilt from the saved parts (image processor, tokenizer, chat template,
    saved settings) with :func:`family_processor`."""
    from transformers import AutoProcessor

    if model_type not in VIDEO_FAMILIES or (torchvision_available() and has_video_processor(Path(path))):
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    return rebuild_processor(Path(path), model_type, trust_remote_code)


def has_video_processor(folder: Path) -> bool:
    """Whether a local checkpoint saved a video processor (hub ids: assumed, as the hub ships them)."""
    if not folder.is_dir():
        return True
    if (folder / "video_preprocessor_config.json").is_file():
        return True
    saved = read_json(folder / PROCESSOR_FILE)
    return bool(saved.get("video_processor")) and not str(saved.get("processor_class", "")).startswith("ImageOnly")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def rebuild_processor(folder: Path, model_type: str, trust_remote_code: bool = False) -> Any:
    """The family's processor from a checkpoint's parts (see :func:`load_processor`)."""
    from transformers import AutoImageProcessor, AutoTokenizer

    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: a {model_type} processor without torchvision is rebuilt from a local checkpoint "
            "folder (image processor, tokenizer); download the checkpoint first or install torchvision"
        )
    saved = read_json(folder / PROCESSOR_FILE)
    skip = {"image_processor", "video_processor", "processor_class", "auto_map"}
    settings: dict[str, Any] = {k: v for k, v in saved.items() if k not in skip}
    config = read_json(folder / "config.json")
    if model_type == "internvl":  # tokens per tile, as the model expects
        settings.setdefault("image_seq_length", config.get("image_seq_length", 256))
    if model_type == "llava_onevision":  # settings the model implies
        vision = config.get("vision_config", {})
        strategy = config.get("vision_feature_select_strategy", "full")
        tokens = (vision.get("image_size", 384) // vision.get("patch_size", 14)) ** 2
        settings.setdefault("num_image_tokens", tokens + (1 if strategy == "default" else 0))
        settings.setdefault("vision_feature_select_strategy", strategy)
        settings.setdefault("vision_aspect_ratio", config.get("vision_aspect_ratio", "anyres_max_9"))
    template = folder / "chat_template.jinja"
    try:
        image_processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ValueError(f"{folder}: no readable image processor settings ({PROCESSOR_FILE} or "
                         f"preprocessor_config.json): {err}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ValueError(f"{folder}: no readable tokenizer (tokenizer.json / tokenizer_config.json): {err}") from None
    return family_processor(
        model_type,
        image_processor,
        tokenizer,
        chat_template=template.read_text() if template.is_file() else None,
        **settings,
    )
