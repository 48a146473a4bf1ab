"""vLLM's ``LlavaForConditionalGeneration`` with zooprune's pre-LLM pruning in its image path.

Registered by :func:`zooprune.vllm.register` under vLLM's own architecture name, so
``vllm serve llava-hf/llava-1.5-7b-hf`` picks it up. Without a zooprune setting (deployment or
request) it is stock vLLM: same embeddings, same placeholders. With one, ``embed_multimodal``
runs the stock vision tower and projector once for the batch's images, then per image the
request's method keeps the k tokens the processor reserved (:mod:`zooprune.vllm.select`); the
language model, its KV cache and attention backends are untouched.

The model keeps its last selections (``zooprune.vllm.model.REPORTS``) in ``zooprune_reports`` (kept indices, scores,
budget; read them with ``LLM.apply_model``), as ``PrunedVLM.generate`` returns its reports.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from vllm.model_executor.models.llava import LlavaDummyInputsBuilder, LlavaForConditionalGeneration
from vllm.multimodal import MULTIMODAL_REGISTRY

from ..adapters.base import ImageTokens
from ..pipeline import image_report
from .budget import planned_tokens
from .model import Plan, ZoopruneModelMixin
from .processor import build_info, build_processor
from .select import prune_image, square_grid
from .vision import tower_features


@MULTIMODAL_REGISTRY.register_processor(build_processor, info=build_info, dummy_inputs=LlavaDummyInputsBuilder)
class ZooLlavaForConditionalGeneration(ZoopruneModelMixin, LlavaForConditionalGeneration):
    """LLaVA-1.5 in vLLM, pruning each image to its request's budget before the language model."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._zooprune_init(vllm_config)

    def prune_images(self, image_input: Any, plans: list[Plan]) -> tuple[Tensor, ...]:
        """``(I, 3, H, W)`` pixels + one (config, question ids) per image -> per image ``(k_i, d_l)``."""
        needs = frozenset().union(*(config.spec.needs for config, _ in plans))
        vision = tower_features(self, image_input["pixel_values"], needs)
        features = vision["features"]  # (I, N, d_v)
        projected = self.multi_modal_projector(features)  # (I, N, d_l), the stock embeddings
        grid = square_grid(projected.shape[1])
        kept = []
        for i, (config, question) in enumerate(plans):
            image = ImageTokens(
                projected=projected[i],
                features=features[i],
                grid=grid,
                cls_attention=None if vision["cls_attention"] is None else vision["cls_attention"][i],
                keys=None if vision["keys"] is None else vision["keys"][i],
            )
            tokens, sel = prune_image(
                config,
                image,
                planned_tokens(config, int(projected.shape[1]), grid),
                self.zooprune_projector,
                self.question_embedder(question, projected.device),
            )
            self.zooprune_reports.append(
                image_report(config, image, sel, int(tokens.shape[0]), 0, 0.0, str(self.config.model_type))
            )
            kept.append(tokens)
        return tuple(kept)
