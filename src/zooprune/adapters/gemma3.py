"""Gemma 3 (``Gemma3ForConditionalGeneration``): SigLIP, then average pooling to
``mm_tokens_per_image`` tokens, RMSNorm and a matrix.

The pooling happens before any per-token map, so a token's pre-projector feature is its pooled
vision vector ``(d_v,)`` and the projector seen by the methods is RMSNorm + matmul (token-wise).
Image tokens attend to each other bidirectionally in Gemma 3: the pruned inputs carry
``token_type_ids`` marking the kept image positions, or the logits would differ. Gemma 3's
``generate`` does not accept ``inputs_embeds``, so the pruned prompt goes in as ``input_ids`` with k
placeholders per image and the kept tokens as ``mm_encoder_outputs`` (the stock route for
pre-encoded images, giving the same logits).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..config import PruneConfig
from .base import ImageTokens, PreparedInputs, VLMAdapter


class PooledTokenProjector(nn.Module):
    """Gemma 3's projector after its pooling: ``(..., d_v) -> (..., d_l)``."""

    def __init__(self, projector: nn.Module) -> None:
        super().__init__()
        self.norm = projector.mm_soft_emb_norm
        self.weight = projector.mm_input_projection_weight

    def forward(self, x: Tensor) -> Tensor:
        return torch.matmul(self.norm(x), self.weight)


class Gemma3Adapter(VLMAdapter):
    model_types = ("gemma3",)
    model_class = "Gemma3ForConditionalGeneration"
    vision_input_names = ("token_type_ids",)
    provides = frozenset({"features", "projector", "grid", "instruction"})

    def projector(self) -> nn.Module:
        return PooledTokenProjector(self.model.model.multi_modal_projector)

    def encode(self, pixel_values: Tensor, needs: frozenset[str], **extras: Any) -> list[ImageTokens]:
        """``(I, 3, H, W)`` -> per image pooled ``(N, d_v)`` features and ``(N, d_l)`` tokens."""
        inner = self.model.model
        hidden = inner.vision_tower(
            pixel_values=pixel_values.to(self.model.dtype), return_dict=True
        ).last_hidden_state
        mmp = inner.multi_modal_projector
        side = mmp.patches_per_image
        grid = hidden.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[-1], side, side).contiguous()
        pooled = mmp.avg_pool(grid).flatten(2).transpose(1, 2)  # (I, N, d_v), as the stock projector pools
        projected = self.projector()(pooled).type_as(hidden)  # (I, N, d_l)
        per_side = math.isqrt(pooled.shape[1])
        return [
            ImageTokens(projected=projected[i], features=pooled[i], grid=(per_side, per_side))
            for i in range(len(pooled))
        ]

    def prepare(
        self,
        config: PruneConfig,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        pixel_values: Tensor,
        **extras: Any,
    ) -> PreparedInputs:
        """The shared pruning, plus ``token_type_ids`` for the kept image tokens (bidirectional mask)."""
        extras.pop("token_type_ids", None)
        prepared = super().prepare(config, input_ids, attention_mask, pixel_values, **extras)
        prepared.extra["token_type_ids"] = (prepared.spliced.input_ids == self.image_token_id).long()
        prepared.ids_route, prepared.image_token_id = (
            True,
            self.image_token_id,
        )  # generate takes no embeddings
        return prepared
