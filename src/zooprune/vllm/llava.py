"""vLLM's ``LlavaForConditionalGeneration`` with zooprune's pre-LLM pruning in its image path.

Registered by :func:`zooprune.vllm.register` under vLLM's own architecture name, so
``vllm serve llava-hf/llava-1.5-7b-hf`` picks it up. Without a zooprune setting (deployment or
request) it is stock vLLM: same embeddings, same placeholders. With one, ``embed_multimodal``
runs the stock vision tower and projector once for the batch's images, then per image the
request's method keeps the k tokens the processor reserved (:mod:`zooprune.vllm.select`); the
language model, its KV cache and attention backends are untouched.

The model keeps the last :data:`REPORTS` selections in ``zooprune_reports`` (kept indices, scores,
budget; read them with ``LLM.apply_model``), as ``PrunedVLM.generate`` returns its reports.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from vllm.model_executor.models.llava import LlavaDummyInputsBuilder, LlavaForConditionalGeneration
from vllm.multimodal import MULTIMODAL_REGISTRY

from ..adapters.base import ImageTokens
from ..config import PruneConfig
from ..pipeline import image_report
from ..report import PruneReport
from .processor import build_info, build_processor, checked_config, deployment_default
from .projector import float32_llava_projector
from .request import KEY, decode, from_wire
from .select import prune_image, square_grid
from .vision import tower_features

#: How many recent image selections the model keeps in ``zooprune_reports``.
REPORTS = 256


def wire_rows(value: Any) -> list[Tensor]:
    """The per-image ``zooprune`` field as a list of ``(L,)`` uint8 tensors (stacked or ragged)."""
    if isinstance(value, Tensor):
        return list(value.unbind(0)) if value.dim() == 2 else [value]
    return [row for item in value for row in wire_rows(item)]


@MULTIMODAL_REGISTRY.register_processor(build_processor, info=build_info, dummy_inputs=LlavaDummyInputsBuilder)
class ZooLlavaForConditionalGeneration(LlavaForConditionalGeneration):
    """LLaVA-1.5 in vLLM, pruning each image to its request's budget before the language model."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        default = deployment_default(vllm_config.model_config)
        checked_config(default, None)  # a bad deployment default fails at start-up, naming it
        if default and self.config.vision_config.model_type == "pixtral":
            raise ValueError("zooprune does not prune Pixtral-HF checkpoints (LLaVA-1.5 CLIP/SigLIP towers only)")
        # not a submodule: vLLM would expect its weights in the checkpoint
        self._zooprune_scoring: dict[str, torch.nn.Module] = {}
        self.zooprune_reports: deque[PruneReport] = deque(maxlen=REPORTS)

    def load_weights(self, weights: Iterable[tuple[str, Tensor]]) -> set[str]:
        """Stock loading, then the float32 projector copy for scoring, while the weights are still
        plain tensors (vLLM's CPU backend repacks linear weights for oneDNN after loading and drops
        them). Every tensor-parallel rank loads in step, so the shard gather runs here."""
        loaded = super().load_weights(weights)
        self._zooprune_scoring["projector"] = float32_llava_projector(self.multi_modal_projector, self.config)
        return loaded

    def zooprune_projector(self) -> torch.nn.Module:
        """The float32 full-weight projector (see :meth:`load_weights`; built here if weights were
        loaded another way and are still plain tensors)."""
        if "projector" not in self._zooprune_scoring:
            self._zooprune_scoring["projector"] = float32_llava_projector(self.multi_modal_projector, self.config)
        return self._zooprune_scoring["projector"]

    def embed_multimodal(self, **kwargs: object) -> Any:
        """Per image ``(k_i, d_l)`` embeddings, k_i = the placeholders of its request."""
        wires = kwargs.pop(KEY, None)
        image_input = self._parse_and_validate_image_input(**kwargs)
        if image_input is None:
            return []
        if wires is None or image_input["type"] != "pixel_values":
            return self._process_image_input(image_input)
        plans = [from_wire(decode(row)) for row in wire_rows(wires)]
        if all(not config.spec.prunes for config, _ in plans):
            return self._process_image_input(image_input)  # stock path: every token
        return self.prune_images(image_input["pixel_values"], plans)

    @torch.no_grad()
    def prune_images(
        self, pixel_values: Tensor, plans: list[tuple[PruneConfig, list[int] | None]]
    ) -> tuple[Tensor, ...]:
        """``(I, 3, H, W)`` pixels + one (config, question ids) per image -> per image ``(k_i, d_l)``."""
        needs = frozenset().union(*(config.spec.needs for config, _ in plans))
        vision = tower_features(self, pixel_values, needs)
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
            instruction = None
            if question is not None:
                ids = torch.tensor(question, dtype=torch.long, device=projected.device)
                instruction = lambda ids=ids: self.get_language_model().embed_input_ids(ids)  # noqa: E731
            tokens, sel = prune_image(config, image, self.zooprune_projector, instruction)
            self.zooprune_reports.append(
                image_report(config, image, sel, int(tokens.shape[0]), 0, 0.0, str(self.config.model_type))
            )
            kept.append(tokens)
        return tuple(kept)
