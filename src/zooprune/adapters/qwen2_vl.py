"""Qwen2-VL and Qwen2.5-VL: the projector is the patch merger (2 x 2 patches -> one token).

``model.model.visual`` returns ``last_hidden_state`` (one row per 14-px patch, the merger's
input; window order for Qwen2.5-VL) and ``pooler_output`` (the merged tokens). A merged token's
pre-projector feature is its group's four patch rows concatenated ``(4 d_v,)``; the projector
seen by the methods is ``ln_q`` per patch then the merger MLP, so zoo's sensitivity perturbs
the whole group's input. Qwen2.5-VL's window order is undone with
``argsort(window_index)`` so features line up with ``pooler_output``.

Positions are 3-D (mRoPE): ``get_rope_index`` on the full prompt gives every token's
(t, h, w) ids; the kept tokens keep their columns (text after the image keeps its offset),
and the pruned ``position_ids`` are passed to ``generate`` explicitly. The model's cached
``rope_deltas`` are reset so nothing stale is reused.

Layout on the image: the processor resizes the whole image (no crop) to a multiple of
``patch x merge`` pixels per side, so the merged token grid tiles all of it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..geometry import View, grid_view, report_grid
from ..report import PruneReport
from .base import ImageTokens, VLMAdapter
from .splice import SplicedInputs


class GroupMerger(nn.Module):
    """The patch merger as a token-wise map ``(..., m^2 d_v) -> (..., d_l)`` (LayerNorm per patch)."""

    def __init__(self, merger: nn.Module, patch_dim: int) -> None:
        super().__init__()
        self.merger = merger
        self.patch_dim = patch_dim

    def forward(self, x: Tensor) -> Tensor:
        patches = x.view(*x.shape[:-1], -1, self.patch_dim)  # (..., m^2, d_v)
        normed = self.merger.ln_q(patches).reshape(*x.shape[:-1], -1)  # (..., m^2 d_v)
        return self.merger.mlp(normed)


class Qwen2VLAdapter(VLMAdapter):
    model_types = ("qwen2_vl", "qwen2_5_vl")
    model_class = "AutoModelForImageTextToText"
    vision_input_names = ("image_grid_thw", "mm_token_type_ids")
    provides = frozenset({"features", "projector", "grid", "instruction"})

    def projector(self) -> nn.Module:
        visual = self.model.model.visual
        patch_dim = (
            getattr(visual.config, "embed_dim", None) or visual.config.hidden_size
        )  # Qwen2-VL / 2.5-VL
        return GroupMerger(visual.merger, patch_dim)

    def encode(
        self, pixel_values: Tensor, needs: frozenset[str], image_grid_thw: Tensor | None = None, **extras: Any
    ) -> list[ImageTokens]:
        """Flattened patches ``(P, C t p p)`` + ``image_grid_thw`` ``(I, 3)`` -> per image ``(N, 4 d_v)``
        group features and ``(N, d_l)`` merged tokens, N = t h w / 4."""
        if image_grid_thw is None:
            raise ValueError("Qwen2-VL needs the processor's image_grid_thw")
        visual = self.model.model.visual
        out = visual(pixel_values.to(visual.dtype), grid_thw=image_grid_thw, return_dict=True)
        hidden = out.last_hidden_state  # (P, d_v) patch rows, merger input order
        group = visual.spatial_merge_size**2
        feats = hidden.reshape(-1, group * hidden.shape[-1])  # (N_total, 4 d_v)
        order = self.window_order(image_grid_thw)
        if order is not None:
            feats = feats[order]
        projected = out.pooler_output  # (N_total, d_l), natural order
        merge = visual.spatial_merge_size
        result, start = [], 0
        for t, h, w in image_grid_thw.tolist():
            n = t * h * w // group
            result.append(
                ImageTokens(
                    projected=projected[start : start + n],
                    features=feats[start : start + n],
                    grid=(h // merge, w // merge) if t == 1 else None,
                )
            )
            start += n
        return result

    @classmethod
    def token_layout(cls, image_size: tuple[int, int], report: PruneReport, processor: Any) -> list[View]:
        """One ``image`` view: the whole ``(width, height)`` image cut into ``report.grid`` (merged tokens)."""
        width, height = image_size
        return [grid_view("image", image_size, report_grid(report), (0.0, 0.0, float(width), float(height)))]

    def window_order(self, image_grid_thw: Tensor) -> Tensor | None:
        """Qwen2.5-VL: the permutation from window order back to natural order (None for Qwen2-VL)."""
        visual = self.model.model.visual
        if getattr(visual, "window_size", None) is None:
            return None
        from transformers.vision_utils import get_vision_window_index

        window_index, _ = get_vision_window_index(
            image_grid_thw,
            spatial_merge_size=visual.spatial_merge_size,
            window_size=visual.window_size,
            patch_size=visual.patch_size,
        )
        return torch.argsort(window_index)

    def model_inputs(
        self, spliced: SplicedInputs, input_ids: Tensor, attention_mask: Tensor | None, extras: dict[str, Any]
    ) -> dict[str, Any]:
        """The pruned embeddings plus 3-D positions: the kept tokens' columns of the full prompt's ids."""
        inner = self.model.model
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        full, _ = inner.get_rope_index(
            input_ids,
            mm_token_type_ids=extras["mm_token_type_ids"],
            image_grid_thw=extras["image_grid_thw"],
            attention_mask=mask,
        )  # (3, B, L)
        positions = torch.ones(3, *spliced.input_ids.shape, dtype=full.dtype, device=full.device)
        length = spliced.input_ids.shape[1]
        for b, sources in enumerate(spliced.source_positions):
            row = full[:, b, mask[b].bool()]  # (3, L_b) unpadded
            positions[:, b, length - sources.numel() :] = row[:, sources]
        inner.rope_deltas = None  # never reuse deltas cached by an earlier call
        return {**super().model_inputs(spliced, input_ids, attention_mask, extras), "position_ids": positions}
