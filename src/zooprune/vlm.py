"""``zooprune.load``: a Hugging Face VLM plus its processor, pruning every ``generate`` call.

The flow of one call: :meth:`PrunedVLM.generate` -> processor -> :func:`zooprune.pipeline.prepare`
(encode, select, splice, reports) -> :func:`generate_pruned` (stock ``model.generate``, timed).
"""

from __future__ import annotations

import copy
import re
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn
from transformers import LogitsProcessor, LogitsProcessorList

from .adapters import adapter_class, get_adapter
from .config import CropBudget, Fidelity, Keep, PruneConfig
from .pipeline import PreparedInputs
from .pipeline import prepare as prepare_pruned
from .report import GenerationResult

ImageLike = Image.Image | str | Path
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def open_image(image: ImageLike) -> Image.Image:
    """A PIL image (RGB) from a PIL image or a file path; a clear error naming a missing, unreadable
    or corrupt file."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except UnidentifiedImageError:
        raise ValueError(f"cannot read image file {path}: not an image format PIL recognises") from None
    except (OSError, SyntaxError) as err:  # truncated or corrupt data, unreadable file
        raise ValueError(f"cannot read image file {path}: {err}") from None


def resolve_dtype(dtype: torch.dtype | str | None, device: str | torch.device) -> torch.dtype | str:
    """``None`` -> float32 on CPU, the checkpoint's dtype ("auto") elsewhere; strings like "bfloat16"."""
    if dtype is None:
        return torch.float32 if torch.device(device).type == "cpu" else "auto"
    if isinstance(dtype, str) and dtype != "auto":
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16', 'float16' or 'auto'")
        return getattr(torch, dtype)
    return dtype


class StepClock(LogitsProcessor):
    """A no-op logits processor that records when each generation step's logits arrive."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.stamps: list[float] = []

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        self.stamps.append(time.perf_counter())
        return scores

    def split(self, end: float) -> dict[str, float]:
        """``prefill`` = start to first logits (time to first token); ``decode`` = the rest (ms)."""
        if not self.stamps:
            return {"prefill": (end - self.start) * 1e3, "decode": 0.0}
        return {"prefill": (self.stamps[0] - self.start) * 1e3, "decode": (end - self.stamps[0]) * 1e3}


DEFAULT_GENERATION = {"max_new_tokens": 32, "do_sample": False}


def generate_pruned(model: nn.Module, prepared: PreparedInputs, **generation_kwargs: Any) -> Tensor:
    """``model.generate`` (stock) on the pruned ``inputs_embeds``; returns only the new tokens ``(B, T)``.

    Fills ``prepared.timings`` (and each report's timings) with ``prefill`` and ``decode`` ms.
    """
    kwargs = {**DEFAULT_GENERATION, **generation_kwargs}
    clock = StepClock()
    processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
    processors.append(clock)
    with torch.no_grad():
        clock.start = time.perf_counter()
        with prepared.active():
            new_tokens = model.generate(**prepared.model_kwargs(), logits_processor=processors, **kwargs)
        end = time.perf_counter()
    if not isinstance(new_tokens, Tensor):  # return_dict_in_generate=True
        new_tokens = new_tokens.sequences
    new_tokens = prepared.new_tokens(new_tokens)
    split = clock.split(end)
    prepared.timings.update(split)
    for report in prepared.reports:
        report.timings.update(split)
    return new_tokens


class PrunedVLM:
    """A model, its processor and a :class:`PruneConfig`; ``generate`` prunes visual tokens.

    Build it with :func:`zooprune.load`, or directly from objects you already hold. Nothing the
    caller passed in is changed (the model is put in eval mode; the tokenizer keeps its padding side).
    """

    def __init__(self, model: nn.Module, processor: Any, config: PruneConfig) -> None:
        self.model = model.eval()
        self.processor = processor
        self.config = config
        self.adapter = get_adapter(model)

    def configured(
        self,
        method: str | None = None,
        keep: Keep | None = None,
        seed: int | None = None,
        budget: CropBudget | None = None,
        fidelity: Fidelity | None = None,
        **options: Any,
    ) -> PruneConfig:
        """The current :class:`PruneConfig` with these changes. A new ``method`` starts from its own
        default options plus ``options``; otherwise ``options`` update the current ones."""
        changes: dict[str, Any] = {
            k: v
            for k, v in (("method", method), ("keep", keep), ("seed", seed), ("budget", budget), ("fidelity", fidelity))
            if v is not None
        }
        if method is not None:
            changes["options"] = options
        elif options:
            changes["options"] = self.config.options.updated(self.config.method, options)
        return self.config.replace(**changes)

    def configure(self, **changes: Any) -> PrunedVLM:
        """Change method / keep / seed / budget / options in place (no reload); returns self.
        See :meth:`configured`; to try a setting without changing this object use :meth:`using`."""
        self.config = self.configured(**changes)
        return self

    def using(self, **changes: Any) -> PrunedVLM:
        """A new :class:`PrunedVLM` sharing this model and processor with a changed configuration;
        this object is left as it is (what comparisons over several methods use)."""
        other = copy.copy(self)
        other.config = self.configured(**changes)
        return other

    # ---- inputs -------------------------------------------------------------------------
    def chat_prompt(self, prompt: str, num_images: int = 1) -> str:
        """The model's own chat template around ``num_images`` images and ``prompt``."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        content = [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": prompt}]
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
            )
        token = getattr(self.processor, "image_token", "<image>")
        return f"{token}\n" * num_images + prompt

    def encode_inputs(self, images: Any, prompts: str | list[str]) -> Any:
        """Processor outputs for a batch: one prompt per entry, each with one image or a list of images."""
        prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
        if images is None:
            raise ValueError("no image given: every prompt needs at least one image")
        image_list = [images] if isinstance(images, (Image.Image, str, Path)) else list(images)
        if len(image_list) != len(prompt_list):
            raise ValueError(
                f"got {len(image_list)} image entries for {len(prompt_list)} prompts: give one image "
                "(or a list of images) per prompt"
            )
        per_prompt = [entry if isinstance(entry, (list, tuple)) else [entry] for entry in image_list]
        if any(len(entry) == 0 for entry in per_prompt):
            raise ValueError("a prompt has no image: every prompt needs at least one image")
        pil = [open_image(im) for entry in per_prompt for im in entry]
        texts = [self.chat_prompt(p, len(entry)) for p, entry in zip(prompt_list, per_prompt)]
        nested, start = [], 0  # images grouped per prompt (some processors, e.g. Gemma 3's, need it)
        for entry in per_prompt:
            nested.append(pil[start : start + len(entry)])
            start += len(entry)
        inputs = self.processor(
            images=nested, text=texts, padding=True, padding_side="left", return_tensors="pt"
        )
        return inputs.to(self.model.device)

    def prepare(self, images: Any, prompts: str | list[str]) -> PreparedInputs:
        """Encode, prune and splice: the pruned language-model inputs and per-image reports."""
        inputs = self.encode_inputs(images, prompts)
        extras = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "pixel_values")}
        return prepare_pruned(
            self.adapter,
            self.config,
            inputs["input_ids"],
            inputs.get("attention_mask"),
            inputs["pixel_values"],
            **extras,
        )

    # ---- generation -----------------------------------------------------------------------
    def generate(self, images: Any, prompts: str | list[str], **generation_kwargs: Any) -> GenerationResult:
        """Answer ``prompts`` about ``images`` with pruned visual tokens (greedy, 32 new tokens by default).

        Args:
            images: one image (PIL image or path) per prompt, or a list of images per prompt.
            prompts: a string or a list of strings (user text; the chat template is applied here).
            generation_kwargs: passed to the stock ``model.generate``.
        """
        prepared = self.prepare(images, prompts)
        new_tokens = generate_pruned(self.model, prepared, **generation_kwargs)
        texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        return GenerationResult([t.strip() for t in texts], prepared.reports, prepared.timings)


def check_model_path(path: str | Path) -> str:
    """A local folder that exists, or something shaped like a hub id; else a clear error."""
    text = str(path)
    if Path(text).expanduser().exists():
        return str(Path(text).expanduser())
    if HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        return text
    raise FileNotFoundError(f"model directory not found: {text}")


def load(
    path: str | Path,
    method: str = "zoo",
    keep: Keep = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    budget: CropBudget = "per-crop",
    fidelity: Fidelity = "improved",
    **options: Any,
) -> PrunedVLM:
    """Load a VLM checkpoint (local folder or hub id) with its processor, ready to prune.

    Args:
        path: ``save_pretrained`` folder (weights in safetensors) or hub id.
        method: registered method name (``zooprune.list_methods()``).
        keep: int token count per image, or float ratio in (0, 1].
        seed: seeds every random draw (zoo's directions, random's sample).
        device: where the model runs.
        dtype: model dtype; default float32 on CPU, the checkpoint's dtype on accelerators.
            Scores are computed in float32 whatever this is.
        trust_remote_code: only if you trust the checkpoint's code (off by default).
        budget: ``"per-crop"`` or ``"whole"``, how crops / tiles share the budget (see :class:`PruneConfig`).
        fidelity: ``"improved"`` (default) or ``"reference"``: reproduce the method's reference code
            (see :class:`PruneConfig` and ``docs/fidelity.md``; methods without one raise ``ValueError``).
        options: the method's options, e.g. ``estimator="central", num_directions=16`` for zoo;
            unknown options, and options the configuration would ignore, raise ``ValueError``.
    """
    import transformers
    from transformers import AutoConfig

    from .compat import load_processor

    source = check_model_path(path)
    config = PruneConfig(method=method, keep=keep, seed=seed, options=options, budget=budget, fidelity=fidelity)
    hf_config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    model_cls = getattr(transformers, adapter_class(hf_config.model_type).model_class)
    model = model_cls.from_pretrained(
        source, dtype=resolve_dtype(dtype, device), use_safetensors=True, trust_remote_code=trust_remote_code
    ).to(device)
    processor = load_processor(source, hf_config.model_type, trust_remote_code=trust_remote_code)
    return PrunedVLM(model, processor, config)
