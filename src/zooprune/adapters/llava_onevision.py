"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``): SigLIP "full" features, anyres,
``vision_aspect_ratio`` (e.g. ``anyres_max_9``) that may *downsample* the high-resolution grid.

As in LLaVA-NeXT the packed image is the base view, then the unpadded high-resolution grid
with a newline token per row. When that grid is larger than ``vision_aspect_ratio`` allows,
transformers bilinearly interpolates the *projected* tokens; a pruned token then has no
pre-projector feature of its own, so zoo scores the same interpolation of the pre-projector
features (an approximation, exact when nothing is downsampled). The budget is split equally
between the base view and the high-resolution grid (two groups with known grids; the reference
code has no OneVision implementation), newlines kept on top; ``budget="whole"``
pools them. In multi-image prompts (``batch_num_images`` > 1) each image is its base view only.

Layout on the image: LLaVA-NeXT's base and high-res views; the processor gives tokens per crop
(``num_image_tokens``) instead of a patch size, and an ``anyres_max_N`` downsampled high-res grid
has fewer, larger cells over the same region.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .base import ImageTokens
from .llava_next import LlavaNextAdapter


class LlavaOnevisionAdapter(LlavaNextAdapter):
    model_types = ("llava_onevision",)
    model_class = "LlavaOnevisionForConditionalGeneration"
    vision_input_names = ("image_sizes", "batch_num_images")
    provides = frozenset({"features", "projector", "grid", "instruction", "llm_layer"})  # no [CLS] in SigLIP

    @classmethod
    def tokens_per_crop_side(cls, processor: Any) -> int:
        """Tokens along one side of a crop: the square root of the processor's ``num_image_tokens``."""
        per_crop = getattr(processor, "num_image_tokens", None)
        if not per_crop or math.isqrt(int(per_crop)) ** 2 != int(per_crop):
            raise ValueError(
                f"the processor gives no square num_image_tokens ({per_crop!r}): cannot lay out "
                "LLaVA-OneVision anyres tokens"
            )
        return math.isqrt(int(per_crop))

    @classmethod
    def high_res_grid(cls, processor: Any, rows: int, cols: int, side: int) -> tuple[int, int]:
        """``anyres_max_N`` (``processor.vision_aspect_ratio``): a grid of more than about N crops'
        worth of tokens is bilinearly resized to ``(int(rows / r), int(cols / r))``, as transformers does."""
        text = getattr(processor, "vision_aspect_ratio", None)
        if not (isinstance(text, str) and text.startswith("anyres_max_")):
            return rows, cols
        ratio = math.sqrt(rows * cols / (int(text[len("anyres_max_") :]) * side * side))
        return (int(rows // ratio), int(cols // ratio)) if ratio > 1.1 else (rows, cols)

    def encode(
        self,
        pixel_values: Tensor,
        needs: frozenset[str],
        image_sizes: Tensor | None = None,
        batch_num_images: Tensor | None = None,
        **extras: Any,
    ) -> list[ImageTokens]:
        if image_sizes is None:
            raise ValueError("LLaVA-OneVision needs the processor's image_sizes")
        patched = (
            [True] * len(image_sizes)
            if batch_num_images is None
            else [n == 1 for n in batch_num_images.tolist() for _ in range(n)]
        )
        counts = [c if p else 1 for c, p in zip(self.crops_per_image(image_sizes), patched)]
        if pixel_values.dim() == 5:
            pixel_values = torch.cat([pv[:c] for pv, c in zip(pixel_values, counts)])
        feats, _, _ = self.vision_features(
            pixel_values, needs - {"cls_attention", "keys"}
        )  # (P_total, n, d_v)
        projected = self.projector()(feats)
        out, start = [], 0
        for i, count in enumerate(counts):
            crops = slice(start, start + count)
            start += count
            out.append(self._pack_onevision(projected[crops], feats[crops], image_sizes[i : i + 1]))
        return out

    def _pack_onevision(self, projected: Tensor, feats: Tensor, size: Tensor) -> ImageTokens:
        """One image's ``(P, n, .)`` crops -> packed tokens, the same packing applied to the features."""
        inner, config = self.model.model, self.model.config
        ratio = config.vision_aspect_ratio

        def pack(x: Tensor, newline: Tensor) -> Tensor:
            return inner.pack_image_features([x], size, image_newline=newline, vision_aspect_ratio=ratio)[0][
                0
            ]

        packed = pack(projected, inner.image_newline)  # (M, d_l), as the stock model builds it
        packed_feats = pack(feats, torch.zeros(feats.shape[-1], dtype=feats.dtype, device=feats.device))
        marker = torch.zeros(projected.shape[0], projected.shape[1], 1, device=projected.device)
        marker[0] = 1.0  # base view
        where = pack(marker, torch.full((1,), -1.0, device=projected.device))[:, 0]  # 1 base, -1 newline
        base = (where > 0.999).nonzero().flatten()
        newline = (where == -1.0).nonzero().flatten()
        grid_tokens = ((where > -1.0) & (where <= 0.999)).nonzero().flatten()
        side = config.vision_config.image_size // config.vision_config.patch_size
        groups, grids = [base], [(side, side)]
        if grid_tokens.numel():
            rows = newline.numel()
            groups.append(grid_tokens)
            grids.append(
                (rows, grid_tokens.numel() // rows) if rows and grid_tokens.numel() % rows == 0 else None
            )
        return ImageTokens(
            projected=packed,
            features=packed_feats,
            grid=None,
            groups=groups,
            group_grids=grids,
            always_keep=newline,
        )
