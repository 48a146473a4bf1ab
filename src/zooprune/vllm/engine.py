"""``PrunedVLM``'s evaluation interface (``using`` / ``generate``) over a vLLM engine with the plugin.

``zooprune eval --engine vllm`` runs the same loop (``zooprune.eval.runner.evaluate``) through it:
every configuration is a per-request setting on one engine, prompts go through the checkpoint's
own chat template, answers are greedy. Reports carry the token counts the engine used (visual
placeholders before / after, text tokens); kept indices are not collected here (read them with
:mod:`zooprune.vllm.reports`).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from ..report import GenerationResult, PruneReport
from ..vlm import open_image
from .request import UNPRUNED, resolve

#: LLM(...) settings used unless given: one image per prompt, eager mode, at most 2048 positions
#: (fewer if the model has fewer); on CPU ``gpu_memory_utilization`` is the fraction of RAM for KV.
ENGINE_DEFAULTS: dict[str, Any] = {
    "max_model_len": 2048,
    "gpu_memory_utilization": 0.1,
    "enforce_eager": True,
    "limit_mm_per_prompt": {"image": 1},
}


class VllmVLM:
    """A vLLM engine (``vllm.LLM``) plus the zooprune settings its requests carry.

    Attributes:
        llm: the engine (plugin loaded).
        processor: the checkpoint's HF processor (chat template only).
        model: ``.config`` = the checkpoint's HF config (what the eval loop reads for FLOPs).
        settings: the per-request ``zooprune`` mapping (``{"method": "none"}`` = unpruned).
    """

    def __init__(self, llm: Any, processor: Any, config: Any, settings: dict[str, Any] | None = None) -> None:
        self.llm = llm
        self.processor = processor
        self.model = SimpleNamespace(config=config)
        self.settings = dict(settings or {"method": "none"})
        self.config = resolve(None, self.settings)  # validated here, before any request
        if self.config.spec.in_llm:
            raise ValueError(
                f"method {self.config.method!r} prunes inside the language model; the vLLM plugin "
                "runs pre-LLM methods only"
            )

    @classmethod
    def load(cls, path: str, *, seed: int = 0, dtype: str | None = None, **engine: Any) -> VllmVLM:
        """Start a vLLM engine on ``path`` (``dtype`` default: float32, as ``zooprune.load`` on CPU)."""
        from transformers import AutoConfig, AutoProcessor

        try:
            from vllm import LLM
        except ImportError as err:
            raise ImportError(f"--engine vllm needs vLLM 0.32 installed (see docs/vllm.md): {err}") from None

        config = AutoConfig.from_pretrained(str(path))
        positions = getattr(config.text_config, "max_position_embeddings", None)
        settings = {**ENGINE_DEFAULTS, **engine}
        if positions:
            settings["max_model_len"] = min(int(settings["max_model_len"]), int(positions))
        llm = LLM(model=str(path), dtype=dtype or "float32", seed=seed, **settings)
        return cls(llm, AutoProcessor.from_pretrained(str(path)), config)

    def using(self, method: str | None = None, keep: Any = None, seed: int | None = None, **options: Any) -> VllmVLM:
        """A view with other settings (a new ``method`` starts from its default options)."""
        base = {} if method is not None else dict(self.settings)
        changes = {k: v for k, v in (("method", method), ("keep", keep), ("seed", seed)) if v is not None}
        return VllmVLM(self.llm, self.processor, self.model.config, {**base, **changes, **options})

    def unpruned_tokens(self, image: Any) -> int:
        """Visual tokens of ``image`` before pruning (LLaVA-NeXT: anyres, newlines included)."""
        config = self.model.config
        if config.model_type == "llava_next":
            from .next_processor import planned_anyres

            return planned_anyres(UNPRUNED, config, image.height, image.width)
        return (config.vision_config.image_size // config.vision_config.patch_size) ** 2  # CLIP patches

    def chat_prompt(self, prompt: str) -> str:
        content = [{"type": "image"}, {"type": "text", "text": prompt}]
        return self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )

    def generate(self, images: list[Any], prompts: list[str], max_new_tokens: int = 32) -> GenerationResult:
        """Greedy answers to one-image prompts, with per-image token counts."""
        from vllm import SamplingParams

        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images for {len(prompts)} prompts")
        requests = [
            {
                "prompt": self.chat_prompt(p),
                "multi_modal_data": {"image": open_image(im)},
                "mm_processor_kwargs": {"zooprune": self.settings},
            }
            for im, p in zip(images, prompts)
        ]
        outs = self.llm.generate(
            requests, SamplingParams(max_tokens=max_new_tokens, temperature=0.0), use_tqdm=False
        )
        image_token = int(self.model.config.image_token_index)
        reports = []
        for out, request in zip(outs, requests):
            before = self.unpruned_tokens(request["multi_modal_data"]["image"])
            visual = sum(t == image_token for t in out.prompt_token_ids)
            reports.append(
                PruneReport(
                    method=self.config.method,
                    keep=self.config.keep,
                    tokens_before=before,
                    tokens_after=visual,
                    kept_indices=torch.empty(0, dtype=torch.long),
                    text_tokens=len(out.prompt_token_ids) - visual,
                    model_type=str(self.model.config.model_type),
                )
            )
        return GenerationResult([o.outputs[0].text.strip() for o in outs], reports)
