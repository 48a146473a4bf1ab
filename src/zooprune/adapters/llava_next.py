"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``, anyres): a base image plus high-resolution crops.

Each crop goes through the vision tower and the token-wise projector like LLaVA-1.5; then
``pack_image_features`` lays the crops out as one unpadded grid with an image-newline token
after every row, behind the base image's tokens. Pruning follows the paper (and the reference
``llava_arch_llava_next_7b.py``): the budget is split equally over the base image and the
crops, each crop is scored and selected on its own, and the newline tokens are kept on top of
the budget. ``budget="whole"`` (a ``PruneConfig`` field) instead treats all crop tokens as one pool.

Where every packed token came from is found by packing an index tensor with the model's own
``pack_image_features`` (so unpadding always matches the stock path).

Layout on the image (:meth:`LlavaNextAdapter.token_layout`): a ``base`` view (the whole image
squashed to one square crop) and a ``high-res`` view (the image resized into the best pinpoint
resolution, padded, cut into crops, then unpadded by the model), in the packed order ``base
tokens, then per high-res row: its tokens and one image-newline token``. Newline tokens cover no
region and belong to no view.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..geometry import View, grid_boxes, image_processor_of, pixel_boxes, size_field, unpadded_rows_cols
from ..report import PruneReport
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
        groups, grids, newlines = crop_groups(where, side)
        return ImageTokens(
            projected=packed[0],
            features=feats[crop, pos] * is_token[:, None],
            grid=None,
            cls_attention=None if cls_attn is None else cls_attn[crop, pos] * is_token,
            keys=None if keys is None else keys[crop, pos],
            groups=groups,
            group_grids=grids,
            always_keep=newlines,
            max_tokens=self.max_tokens(side),
        )

    def max_tokens(self, side: int) -> int:
        """Budgeted tokens of the largest anyres image: (1 + the most crops a grid pinpoint gives) x
        ``side``^2 (llava-v1.6: 5 x 576 = 2880, the number ZOO-Prune's reference hard-codes)."""
        crop = self.model.config.vision_config.image_size
        pinpoints = self.model.config.image_grid_pinpoints or [[crop, crop]]
        return (1 + max((h // crop) * (w // crop) for h, w in pinpoints)) * side * side

    # ---- where each token lies on the image --------------------------------------------
    @classmethod
    def token_layout(cls, image_size: tuple[int, int], report: PruneReport, processor: Any) -> list[View]:
        """``base`` and ``high-res`` views of an anyres image (see the module docstring); a report
        with a single token grid is laid out as one crop."""
        if report.grid is not None:
            return super().token_layout(image_size, report, processor)
        from transformers.image_processing_utils import select_best_resolution

        image_processor = image_processor_of(processor)
        width, height = image_size
        crop, side = cls.anyres_crop_pixels(image_processor), cls.tokens_per_crop_side(processor)
        best_h, best_w = select_best_resolution((height, width), image_processor.image_grid_pinpoints)
        # the image is resized to fit best_w x best_h (aspect kept, ceil) and pasted in the middle
        scale_w, scale_h = best_w / width, best_h / height
        if scale_w < scale_h:
            new_w, new_h = best_w, min(math.ceil(height * scale_w), best_h)
        else:
            new_w, new_h = min(math.ceil(width * scale_h), best_w), best_h
        paste_x, paste_y = (best_w - new_w) // 2, (best_h - new_h) // 2
        rows, cols = (best_h // crop) * side, (best_w // crop) * side
        row0, n_rows, col0, n_cols = unpadded_rows_cols(image_size, rows, cols)
        cell = crop / side  # canvas pixels per token
        region = (col0 * cell, row0 * cell, (col0 + n_cols) * cell, (row0 + n_rows) * cell)
        n_rows, n_cols = cls.high_res_grid(processor, n_rows, n_cols, side)  # same region, maybe fewer cells
        high = grid_boxes(*region, n_rows, n_cols)
        high[:, [0, 2]] = (high[:, [0, 2]] - paste_x) * (width / new_w)
        high[:, [1, 3]] = (high[:, [1, 3]] - paste_y) * (height / new_h)
        expected = side * side + n_rows * (n_cols + 1)
        if expected != report.tokens_before:
            raise ValueError(
                f"anyres layout gives {expected} tokens for a {width}x{height} image, "
                f"the report has {report.tokens_before}"
            )
        rows_ids, cols_ids = np.arange(n_rows)[:, None], np.arange(n_cols)[None, :]
        high_idx = side * side + (rows_ids * (n_cols + 1) + cols_ids).reshape(-1)  # skip the newlines
        whole = (0, 0, width, height)
        base = pixel_boxes(grid_boxes(0, 0, width, height, side, side), image_size)
        return [
            View("base", np.arange(side * side), base, whole, (side, side)),
            View("high-res", high_idx, pixel_boxes(high, image_size), whole, (n_rows, n_cols)),
        ]

    @staticmethod
    def anyres_crop_pixels(image_processor: Any) -> int:
        """Side (pixels) of one anyres crop: ``crop_size`` or ``size`` height, or ``shortest_edge``."""
        crop_size, size = getattr(image_processor, "crop_size", None), image_processor.size
        for source, key in ((crop_size, "height"), (size, "height"), (size, "shortest_edge")):
            value = size_field(source, key)
            if value:
                return value
        raise ValueError(f"cannot tell the anyres crop size from {size!r}")

    @classmethod
    def tokens_per_crop_side(cls, processor: Any) -> int:
        """Tokens along one side of a crop: crop pixels / the processor's ``patch_size``."""
        patch = getattr(processor, "patch_size", None)
        if not patch:
            raise ValueError("the processor gives no patch_size: cannot lay out LLaVA-NeXT anyres tokens")
        return cls.anyres_crop_pixels(image_processor_of(processor)) // int(patch)

    @classmethod
    def high_res_grid(cls, processor: Any, rows: int, cols: int, side: int) -> tuple[int, int]:
        """``(rows, cols)`` of the packed high-res grid from the unpadded one (LLaVA-NeXT: the same)."""
        return rows, cols


def crop_groups(sources: Tensor, side: int) -> tuple[list[Tensor], list[tuple[int, int] | None], Tensor]:
    """Per crop, the packed positions of its tokens and its ``(rows, cols)`` grid, and the newlines.

    Args:
        sources: ``(M, 2)`` per packed token its ``(crop, position in crop)``, ``(-1, -1)`` for an
            image-newline token (what the model's packing does to an index tensor).
        side: tokens along one side of a crop.

    Returns:
        ``(groups, grids, newlines)``: per non-empty crop its ``(n_c,)`` packed positions and its grid
        (None unless its surviving tokens form a full row-major rectangle, see :func:`crop_rectangle`),
        and the ``(n_rows,)`` newline positions.
    """
    is_token = sources[:, 0] >= 0
    crop, pos = sources[:, 0], sources[:, 1]
    groups = [(is_token & (crop == c)).nonzero().flatten() for c in range(int(crop.max()) + 1)]
    groups = [g for g in groups if g.numel()]
    return groups, [crop_rectangle(pos[g], side) for g in groups], (~is_token).nonzero().flatten()


def crop_rectangle(positions: Tensor, side: int) -> tuple[int, int] | None:
    """A crop's surviving tokens (unpadding removes whole rows / columns), ``(n,)`` positions within a
    ``side x side`` crop: their ``(rows, cols)`` grid when they form a full rectangle in row-major
    order, else None."""
    rows, cols = positions // side, positions % side
    shape = (int(rows.unique().numel()), int(cols.unique().numel()))
    ordered = bool((positions[1:] > positions[:-1]).all()) if positions.numel() > 1 else True
    return shape if shape[0] * shape[1] == positions.numel() and ordered else None
