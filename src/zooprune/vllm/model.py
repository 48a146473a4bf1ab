"""What every zooprune model class in vLLM adds to vLLM's: the float32 projector copy, the reports,
the per-image plans, and an ``embed_multimodal`` that prunes (the family's :meth:`prune_images`).

Without a zooprune setting (every plan unpruned) the stock ``_process_image_input`` runs: the same
embeddings as stock vLLM.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ..config import PruneConfig
from ..report import PruneReport
from .processor import checked_config, deployment_default
from .projector import float32_llava_projector
from .request import KEY, decode, from_wire

#: How many recent image selections a model keeps in ``zooprune_reports``.
REPORTS = 256

Plan = tuple[PruneConfig, "list[int] | None"]


def wire_rows(value: Any) -> list[Tensor]:
    """The per-image ``zooprune`` field as a list of ``(L,)`` uint8 tensors (stacked or ragged)."""
    if isinstance(value, Tensor):
        return list(value.unbind(0)) if value.dim() == 2 else [value]
    return [row for item in value for row in wire_rows(item)]


class ZoopruneModelMixin:
    """Mixed in before a vLLM LLaVA-style model class (``multi_modal_projector``, ``vision_tower``)."""

    def _zooprune_init(self, vllm_config: Any) -> None:
        default = deployment_default(vllm_config.model_config)
        checked_config(default, None)  # a bad deployment default fails at start-up, naming it
        if default and self.config.vision_config.model_type == "pixtral":
            raise ValueError("zooprune does not prune Pixtral-HF checkpoints (CLIP / SigLIP towers only)")
        # not a submodule: vLLM would expect its weights in the checkpoint
        self._zooprune_scoring: dict[str, torch.nn.Module] = {}
        self.zooprune_reports: deque[PruneReport] = deque(maxlen=REPORTS)

    def load_weights(self, weights: Iterable[tuple[str, Tensor]]) -> set[str]:
        """Stock loading, then the float32 projector copy for scoring, while the weights are still
        plain tensors (vLLM's CPU backend repacks linear weights for oneDNN after loading and drops
        them). Every tensor-parallel rank loads in step, so the shard gather runs here."""
        loaded = super().load_weights(weights)
        self._zooprune_scoring["projector"] = self.float32_projector()
        return loaded

    def float32_projector(self) -> torch.nn.Module:
        """The family's projector as a float32 full-weight token-wise module (LLaVA's by default)."""
        return float32_llava_projector(self.multi_modal_projector, self.config)

    def zooprune_projector(self) -> torch.nn.Module:
        """The float32 full-weight projector (see :meth:`load_weights`; built here if weights were
        loaded another way and are still plain tensors)."""
        if "projector" not in self._zooprune_scoring:
            self._zooprune_scoring["projector"] = self.float32_projector()
        return self._zooprune_scoring["projector"]

    def question_embedder(self, question: list[int] | None, device: torch.device) -> Callable[[], Tensor] | None:
        """A callable giving the ``(T, d_l)`` embeddings of the question ids (vLLM's embedding layer)."""
        if question is None:
            return None
        ids = torch.tensor(question, dtype=torch.long, device=device)
        return lambda: self.get_language_model().embed_input_ids(ids)

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
        with torch.no_grad():
            return self.prune_images(image_input, plans)

    def prune_images(self, image_input: Any, plans: list[Plan]) -> tuple[Tensor, ...]:
        """The family's pruning of a batch's images (one plan per image, in order)."""
        raise NotImplementedError
