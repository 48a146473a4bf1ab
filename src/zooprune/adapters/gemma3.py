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

from .base import ImageTokens, VLMAdapter
from .splice import SplicedInputs


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
    generate_returns_prompt = True  # the ids route: generate echoes the prompt

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

    def vision_inputs(self, input_ids: Tensor, extras: dict[str, Any]) -> dict[str, Any]:
        """The processor's ``token_type_ids`` describe the unpruned prompt: not for the vision side."""
        return {k: v for k, v in extras.items() if k != "token_type_ids"}

    def model_inputs(
        self, spliced: SplicedInputs, input_ids: Tensor, attention_mask: Tensor | None, extras: dict[str, Any]
    ) -> dict[str, Any]:
        """The ids route (``generate`` takes no embeddings): k placeholders per image in ``input_ids``,
        the kept tokens as ``mm_encoder_outputs``, and ``token_type_ids`` marking the kept image
        tokens (they attend to each other bidirectionally)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        ids = spliced.input_ids
        is_image = ids == self.image_token_id
        kept = spliced.inputs_embeds[is_image]  # (sum k_i, d), row-major
        return {
            "input_ids": ids,
            "attention_mask": spliced.attention_mask,
            "mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=kept)},
            "token_type_ids": is_image.long(),
        }
