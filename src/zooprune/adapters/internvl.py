"""InternVL (``InternVLForConditionalGeneration``): tiles, pixel shuffle, then an MLP projector.

Each tile (the processor's dynamic crops plus a thumbnail) goes through the vision tower;
the patch grid is pixel-shuffled (2 x 2 patches -> one token, channels concatenated) and
``multi_modal_projector`` (LayerNorm + two-layer MLP) maps each shuffled token. So the
pre-projector feature of a token is its shuffled ``(4 d_v,)`` vector, and the projector is
token-wise on it. An image's tiles form one contiguous run of placeholders; as for
LLaVA-NeXT crops, the budget is split equally over the tiles and each tile is selected on
its own (``budget="whole"`` pools them).

Layout on the image (:meth:`InternVLAdapter.token_layout`): a ``tiles`` view (the image resized
to ``cols x rows`` tiles, read row-major, each tile's pixel-shuffled token grid row-major) and a
``thumbnail`` view (the whole image as one more tile, last).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..geometry import View, grid_boxes, image_processor_of, pixel_boxes, size_field
from ..report import PruneReport
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

    @classmethod
    def token_layout(cls, image_size: tuple[int, int], report: PruneReport, processor: Any) -> list[View]:
        """``tiles`` and ``thumbnail`` views of a tiled image (see the module docstring); a single
        tile (the report has one token grid) is laid out as one crop."""
        if report.grid is not None:
            return super().token_layout(image_size, report, processor)
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

        image_processor = image_processor_of(processor)
        width, height = image_size
        tile_h, tile_w = size_field(image_processor.size, "height"), size_field(image_processor.size, "width")
        if tile_h is None or tile_w is None:
            raise ValueError(f"image processor size {image_processor.size!r} has no tile height and width")
        cols, rows = get_optimal_tiled_canvas(
            (height, width),
            (tile_h, tile_w),
            int(image_processor.min_patches),
            int(image_processor.max_patches),
        )
        tiles = cols * rows + (1 if cols * rows > 1 else 0)  # the thumbnail comes with several tiles
        per_tile = report.tokens_before // tiles
        side = math.isqrt(per_tile)
        if cols * rows == 1 or side * side * tiles != report.tokens_before:
            raise ValueError(
                f"tiled layout gives {cols * rows} tiles + thumbnail for a {width}x{height} image, which does "
                f"not split the report's {report.tokens_before} tokens into square tile grids"
            )
        tile_w_px, tile_h_px = width / cols, height / rows
        boxes = [
            grid_boxes(c * tile_w_px, r * tile_h_px, (c + 1) * tile_w_px, (r + 1) * tile_h_px, side, side)
            for r, c in (divmod(t, cols) for t in range(cols * rows))
        ]  # tile t = (r, c), row-major; its tokens are t * per_tile + 0..per_tile-1
        whole = (0, 0, width, height)
        thumb = pixel_boxes(grid_boxes(0, 0, width, height, side, side), image_size)
        tiled = pixel_boxes(np.concatenate(boxes), image_size)
        return [
            View("tiles", np.arange(cols * rows * per_tile), tiled, whole, (rows * side, cols * side)),
            View("thumbnail", cols * rows * per_tile + np.arange(per_tile), thumb, whole, (side, side)),
        ]
