"""InternVL (``InternVLForConditionalGeneration``): tiles, pixel shuffle, then an MLP projector.

Each tile (the processor's dynamic crops plus a thumbnail) goes through the vision tower;
the patch grid is pixel-shuffled (2 x 2 patches -> one token, channels concatenated) and
``multi_modal_projector`` (LayerNorm + two-layer MLP) maps each shuffled token. So the
pre-projector feature of a token is its shuffled ``(4 d_v,)`` vector, and the projector is
token-wise on it. An image's tiles form one contiguous run of placeholders; as for
LLaVA-NeXT crops, the budget is split equally over the tiles and each tile is selected on
its own (``budget="whole"`` pools them).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .base import ImageTokens, VLMAdapter


class InternVLAdapter(VLMAdapter):
    model_types = ("internvl",)
    model_class = "InternVLForConditionalGeneration"
    provides = frozenset({"features", "projector", "grid", "instruction", "llm_layer"})

    def projector(self) -> nn.Module:
        return self.model.model.multi_modal_projector

    def vision_inputs(self, input_ids: Tensor, extras: dict[str, Any]) -> dict[str, Any]:
        """Each image's tile count, from its run of placeholders (``image_seq_length`` per tile)."""
        per_tile = int(self.model.config.image_seq_length)
        runs = []
        for row in input_ids:
            slots = (row == self.image_token_id).nonzero().flatten()
            if slots.numel():
                breaks = (slots[1:] - slots[:-1] != 1).nonzero().flatten() + 1
                runs += [len(r) // per_tile for r in torch.tensor_split(slots, breaks.tolist())]
        return {**extras, "tiles_per_image": runs}

    def encode(
        self,
        pixel_values: Tensor,
        needs: frozenset[str],
        tiles_per_image: list[int] | None = None,
        **extras: Any,
    ) -> list[ImageTokens]:
        """``pixel_values`` ``(T, 3, H, W)`` tiles -> per image ``(tiles * n, 4 d_v)`` shuffled features
        and ``(tiles * n, d_l)`` tokens, one group per tile."""
        inner, config = self.model.model, self.model.config
        out = inner.vision_tower(
            pixel_values=pixel_values.to(self.model.dtype), return_dict=True, output_hidden_states=True
        )
        layer = config.vision_feature_layer
        feats = out.last_hidden_state if layer == -1 else out.hidden_states[layer]
        if config.vision_feature_select_strategy == "default":
            feats = feats[:, 1:]
        tiles, patches = feats.shape[:2]
        side = math.isqrt(patches)
        shuffled = inner.pixel_shuffle(
            feats.reshape(tiles, side, side, -1), scale_factor=config.downsample_ratio
        )
        grid = tuple(shuffled.shape[1:3])
        shuffled = shuffled.reshape(tiles, -1, shuffled.shape[-1])  # (T, n, 4 d_v)
        projected = self.projector()(shuffled)  # (T, n, d_l)
        counts = tiles_per_image or [tiles]
        if sum(counts) != tiles:
            raise ValueError(
                f"the prompts hold placeholders for {sum(counts)} tiles but pixel_values has {tiles}"
            )
        result, start = [], 0
        n = projected.shape[1]
        for count in counts:
            block = slice(start, start + count)
            start += count
            result.append(
                ImageTokens(
                    projected=projected[block].reshape(-1, projected.shape[-1]),
                    features=shuffled[block].reshape(-1, shuffled.shape[-1]),
                    grid=grid if count == 1 else None,
                    groups=[torch.arange(t * n, (t + 1) * n) for t in range(count)] if count > 1 else None,
                    group_grids=[grid] * count if count > 1 else None,
                )
            )
        return result
