"""LLaVA-1.5's vLLM multimodal processor, emitting k placeholders per image instead of N.

The processor runs in vLLM's front end, before the vision tower. For each request it

1. resolves the pruning configuration (deployment default + ``mm_processor_kwargs['zooprune']``,
   :mod:`zooprune.vllm.request`), raising ``VLLMValidationError`` (an HTTP 400 naming the bad
   method, budget or option) if it is invalid or names an in-LLM method;
2. replaces the request's ``zooprune`` entry by the canonical wire mapping (plus the prompt's
   question token ids for methods that read the prompt), so vLLM's multimodal cache keys (processor
   cache, encoder cache, prefix cache) include the budget;
3. emits :func:`zooprune.vllm.budget.planned_tokens` placeholders per image, and passes the wire
   mapping to the model as one more per-image field (``zooprune``: uint8 JSON).

Profiling (vLLM's dummy inputs) runs unpruned, so memory is sized for the largest request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import BatchFeature, PixtralVisionConfig
from vllm.exceptions import VLLMValidationError
from vllm.model_executor.models.llava import (
    LlavaMultiModalProcessor,
    LlavaProcessingInfo,
    PixtralHFMultiModalProcessor,
    PixtralHFProcessingInfo,
)
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import ImageEmbeddingItems, ImageProcessorItems, MultiModalDataItems
from vllm.multimodal.processing import BaseDummyInputsBuilder, PromptReplacement, PromptUpdate

from ..config import PruneConfig
from .budget import planned_tokens
from .request import KEY, UNPRUNED, encode, from_wire, resolve, to_wire
from .select import square_grid


def deployment_default(model_config: Any) -> Mapping[str, Any] | None:
    """The deployment's zooprune settings: ``--hf-overrides`` over ``--mm-processor-kwargs``."""
    mm_config = getattr(model_config, "multimodal_config", None)
    from_kwargs = ((mm_config.mm_processor_kwargs if mm_config is not None else None) or {}).get(KEY)
    from_overrides = getattr(model_config.hf_config, KEY, None)
    if from_kwargs is None:
        return from_overrides
    return {**from_kwargs, **(from_overrides or {})}


def checked_config(default: Mapping[str, Any] | None, request: Mapping[str, Any] | None) -> PruneConfig:
    """:func:`resolve` with errors as ``VLLMValidationError`` (HTTP 400) and pre-LLM methods only."""
    try:
        config = resolve(default, request)
    except (KeyError, TypeError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise VLLMValidationError(f"zooprune: {message}", parameter=f"mm_processor_kwargs.{KEY}") from None
    if getattr(config, "fidelity", "improved") != "improved":
        raise VLLMValidationError(
            "zooprune: the vLLM plugin runs fidelity='improved' only (float32 scores, this library's "
            f"budget rules), got fidelity={config.fidelity!r}",
            parameter=f"mm_processor_kwargs.{KEY}",
        )
    if config.spec.in_llm:
        raise VLLMValidationError(
            f"zooprune: method {config.method!r} prunes inside the language model, which the vLLM plugin "
            "does not support (it prunes before the language model: choose a pre-LLM method, see "
            "'zooprune methods')",
            parameter=f"mm_processor_kwargs.{KEY}",
        )
    return config


def question_ids(prompt: Sequence[int], image_token_id: int) -> list[int]:
    """The prompt's token ids after its last image token (the HF adapter's ``instruction`` rows):
    the question plus the template's suffix; all non-image ids if the image comes last."""
    last = max((i for i, t in enumerate(prompt) if t == image_token_id), default=-1)
    after = [int(t) for t in prompt[last + 1 :]]
    return after or [int(t) for t in prompt if t != image_token_id]


class ZooLlavaProcessingInfo(LlavaProcessingInfo):
    """LLaVA-1.5 processing info; the HF processor never sees zooprune's settings."""

    def get_hf_processor(self, **kwargs: object):
        kwargs.pop(KEY, None)
        return super().get_hf_processor(**kwargs)


class ZoopruneProcessorMixin:
    """What every family's processor adds to vLLM's: the request's plan (validated, canonical, in the
    cache keys, passed to the model as the per-image ``zooprune`` field) and k placeholders per image.
    A family supplies :meth:`planned_count` (and keeps its own ``_get_prompt_updates`` shape)."""

    def planned_count(self, config: PruneConfig, width: int, height: int) -> int:
        """Placeholders of a ``width`` x ``height`` image under ``config``."""
        raise NotImplementedError

    def image_token_id(self) -> int:
        """The id of the image placeholder token (LLaVA's ``image_token_index``)."""
        return int(self.info.get_hf_config().image_token_index)

    def check_plan(self, config: PruneConfig) -> None:
        """A family's own checks of a validated configuration (raise ``VLLMValidationError``)."""

    def apply(self, inputs, timing_ctx):  # noqa: ANN001 (vLLM's ProcessorInputs / TimingContext)
        kwargs = dict(inputs.hf_processor_mm_kwargs)
        config = checked_config(deployment_default(self.info.ctx.model_config), kwargs.pop(KEY, None))
        self.check_plan(config)
        instruction = None
        if config.spec.needs_prompt:
            instruction = question_ids(inputs.prompt, self.image_token_id())
        kwargs[KEY] = to_wire(config, instruction)
        return super().apply(dataclasses.replace(inputs, hf_processor_mm_kwargs=kwargs), timing_ctx)

    def get_dummy_inputs(self, seq_len, mm_counts, mm_options):  # noqa: ANN001
        """vLLM's profiling inputs, unpruned (the largest placeholder count any request can ask for)."""
        inputs = super().get_dummy_inputs(seq_len, mm_counts, mm_options)
        return dataclasses.replace(inputs, hf_processor_mm_kwargs={KEY: {"method": "none"}})

    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        return super()._call_hf_processor(hf_data, {k: v for k, v in hf_kwargs.items() if k != KEY})

    def _postprocess_hf_mm_data(
        self, mm_inputs: Mapping[str, object], hf_processor_mm_kwargs: Mapping[str, object], processed_data: BatchFeature
    ) -> BatchFeature:
        processed_data = super()._postprocess_hf_mm_data(mm_inputs, hf_processor_mm_kwargs, processed_data)
        images = processed_data.get("pixel_values", processed_data.get("image_embeds"))
        wire = hf_processor_mm_kwargs.get(KEY)
        if images is not None and wire is not None:
            processed_data[KEY] = [encode(wire) for _ in range(len(images))]  # per image: (L,) uint8
        return processed_data

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        return {
            **super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs),
            KEY: MultiModalFieldConfig.batched("image", keep_on_cpu=True),
        }

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        image_token_id = self.info.get_hf_config().image_token_index
        wire = hf_processor_mm_kwargs.get(KEY)
        config = from_wire(wire)[0] if wire is not None else UNPRUNED

        def replacement(item_idx: int) -> list[int]:
            images = mm_items.get_items("image", (ImageEmbeddingItems, ImageProcessorItems))
            if isinstance(images, ImageEmbeddingItems):  # precomputed embeddings pass unpruned
                return [image_token_id] * images.get_feature_size(item_idx)
            size = images.get_image_size(item_idx)
            return [image_token_id] * self.planned_count(config, size.width, size.height)

        return [PromptReplacement(modality="image", target=[image_token_id], replacement=replacement)]


class ZooLlavaMultiModalProcessor(ZoopruneProcessorMixin, LlavaMultiModalProcessor):
    """Stock LLaVA-1.5 processing, with k (not N) placeholders per image and the plan as a field."""

    def planned_count(self, config: PruneConfig, width: int, height: int) -> int:
        n = self.info.get_num_image_tokens(image_width=width, image_height=height)
        return planned_tokens(config, n, square_grid(n))


def build_info(ctx: Any) -> LlavaProcessingInfo | PixtralHFProcessingInfo:
    """vLLM's info factory for the class: Pixtral-HF checkpoints keep vLLM's own (unpruned) path."""
    if isinstance(ctx.get_hf_config().vision_config, PixtralVisionConfig):
        return PixtralHFProcessingInfo(ctx)
    return ZooLlavaProcessingInfo(ctx)


def build_processor(info: Any, dummy_inputs: BaseDummyInputsBuilder) -> Any:
    """vLLM's processor factory, the counterpart of :func:`build_info`."""
    if isinstance(info, PixtralHFProcessingInfo):
        return PixtralHFMultiModalProcessor(info, dummy_inputs)
    return ZooLlavaMultiModalProcessor(info, dummy_inputs)
