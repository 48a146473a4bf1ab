"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``, anyres): a base image plus high-resolution crops.

Each crop goes through the vision tower and the token-wise projector like LLaVA-1.5; then
``pack_image_features`` lays the crops out as one unpadded grid with an image-newline token
after every row, behind the base image's tokens. Pruning follows the paper (and the reference
``llava_arch_llava_next_7b.py``): the budget is split equally over the base image and the
crops, each crop is scored and selected on its own, and the newline tokens are kept on top of
the budget. ``budget="whole"`` (a ``PruneConfig`` field) instead treats all crop tokens as one pool.

Where every packed token came from is found by packing an index tensor with the model's own
``pack_image_features`` (so unpadding always matches the stock path).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import ImageTokens
from .llava import LlavaAdapter


class LlavaNextAdapter(LlavaAdapter):
    model_types = ("llava_next",)
    model_class = "LlavaNextForConditionalGeneration"
    vision_input_names = ("image_sizes",)

    def crops_per_image(self, image_sizes: Tensor) -> list[int]:
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        config = self.model.config
        return [
            image_size_to_num_patches(
                image_size=size,
                grid_pinpoints=config.image_grid_pinpoints,
                patch_size=config.vision_config.image_size,
            )
            for size in image_sizes
        ]

    def encode(
        self, pixel_values: Tensor, needs: frozenset[str], image_sizes: Tensor | None = None, **extras: Any
    ) -> list[ImageTokens]:
        """``pixel_values`` ``(I, P_max, 3, h, w)`` + ``image_sizes`` ``(I, 2)`` -> per image the packed
        ``(M, d_l)`` tokens (newlines included), crop groups and newline positions."""
        if image_sizes is None:
            raise ValueError("LLaVA-NeXT needs the processor's image_sizes")
        counts = self.crops_per_image(image_sizes)
        if pixel_values.dim() == 5:
            pixel_values = torch.cat([pv[:c] for pv, c in zip(pixel_values, counts)])
        feats, cls_attn, keys = self.vision_features(pixel_values, needs)  # (P_total, n, d_v)
        projected = self.projector()(feats)  # (P_total, n, d_l)
        out, start = [], 0
        for i, count in enumerate(counts):
            crops = slice(start, start + count)
            start += count
            out.append(
                self._pack(
                    projected[crops],
                    feats[crops],
                    None if cls_attn is None else cls_attn[crops],
                    None if keys is None else keys[crops],
                    image_sizes[i : i + 1],
                )
            )
        return out

    def _pack(
        self, projected: Tensor, feats: Tensor, cls_attn: Tensor | None, keys: Tensor | None, size: Tensor
    ) -> ImageTokens:
        """One image: ``(P, n, .)`` per-crop tensors -> packed ``ImageTokens``."""
        inner = self.model.model
        strategy = self.model.config.vision_feature_select_strategy
        packed, _ = inner.pack_image_features([projected], size, strategy, image_newline=inner.image_newline)
        crops, n = projected.shape[:2]
        ids = torch.stack(torch.meshgrid(torch.arange(crops), torch.arange(n), indexing="ij"), dim=-1).float()
        marker = torch.tensor([-1.0, -1.0])  # what the packing writes at newline positions
        where, _ = inner.pack_image_features(
            [ids.to(projected.device)], size, strategy, image_newline=marker.to(projected.device)
        )
        where = where[0].round().long()  # (M, 2): (crop, token) or (-1, -1) for a newline
        is_token = where[:, 0] >= 0
        crop, pos = where[:, 0].clamp(min=0), where[:, 1].clamp(min=0)
        side = self.model.config.vision_config.image_size // self.model.config.vision_config.patch_size
        groups = [(is_token & (crop == c)).nonzero().flatten() for c in range(crops)]
        groups = [g for g in groups if g.numel()]
        grids = [self._rectangle(pos[g], side) for g in groups]
        return ImageTokens(
            projected=packed[0],
            features=feats[crop, pos] * is_token[:, None],
            grid=None,
            cls_attention=None if cls_attn is None else cls_attn[crop, pos] * is_token,
            keys=None if keys is None else keys[crop, pos],
            groups=groups,
            group_grids=grids,
            always_keep=(~is_token).nonzero().flatten(),
        )

    @staticmethod
    def _rectangle(positions: Tensor, side: int) -> tuple[int, int] | None:
        """A crop's surviving tokens (unpadding removes whole rows / columns): their ``(rows, cols)``
        grid when they form a full rectangle in row-major order, else None."""
        rows, cols = positions // side, positions % side
        shape = (int(rows.unique().numel()), int(cols.unique().numel()))
        ordered = bool((positions[1:] > positions[:-1]).all()) if positions.numel() > 1 else True
        return shape if shape[0] * shape[1] == positions.numel() and ordered else None
