"""Qwen2.5-VL's vLLM multimodal processor with zooprune's placeholder count.

An image of ``image_grid_thw = (t, h, w)`` patches (14 px) has ``N = t h w / 4`` visual tokens after
the 2 x 2 patch merger; the budget applies to those merged tokens, on the merged grid
``(h / 2, w / 2)``, as in the HF adapter (``zooprune.adapters.qwen2_vl``), so the image gets
:func:`zooprune.vllm.budget.planned_tokens` placeholders. Videos keep vLLM's own processing
(EVS when ``--video-pruning-rate`` is set).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn
from transformers import BatchFeature
from vllm.exceptions import VLLMValidationError
from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLMultiModalProcessor, Qwen2_5_VLProcessingInfo
from vllm.multimodal.inputs import MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems
from vllm.multimodal.processing import PromptReplacement, PromptUpdate

from ..adapters.base import ImageTokens
from ..adapters.qwen2_vl import GroupMerger, Qwen2VLAdapter
from ..config import PruneConfig
from ..pipeline import image_context, select_image
from .budget import planned_tokens
from .processor import KEY, UNPRUNED, ZoopruneProcessorMixin, encode, from_wire


def merged_grid(grid_thw: Sequence[int], merge: int) -> tuple[int, tuple[int, int] | None]:
    """``(t, h, w)`` patches -> (N merged tokens, their ``(h / merge, w / merge)`` grid, None if t > 1)."""
    t, h, w = (int(x) for x in grid_thw)
    return t * (h // merge) * (w // merge), ((h // merge, w // merge) if t == 1 else None)


@functools.lru_cache(maxsize=256)
def stand_in_problem(config: PruneConfig) -> str | None:
    """The error ``config`` would raise on a Qwen2.5-VL image (e.g. an estimator that needs a plain
    MLP projector: the merger normalises first), found on a 2 x 2 stand-in through a stand-in merger
    of the same structure (``GroupMerger``: RMSNorm per patch, Linear, GELU, Linear), before the
    engine runs it; None if it runs."""
    merger = nn.Module()
    merger.ln_q, merger.mlp = nn.RMSNorm(1), nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2))
    gen = torch.Generator().manual_seed(0)
    image = ImageTokens(
        projected=torch.randn(4, 2, generator=gen), features=torch.randn(4, 4, generator=gen), grid=(2, 2)
    )
    small = config.replace(keep=1)
    try:
        with torch.no_grad():
            select_image(
                small.spec,
                small,
                image,
                image_context(small, image, GroupMerger(merger, 1), torch.zeros(1, 2)),
            )
    except (ValueError, TypeError) as err:
        return str(err)
    return None


class ZooQwen2_5_VLProcessingInfo(Qwen2_5_VLProcessingInfo):
    """Qwen2.5-VL processing info; the HF processor never sees zooprune's settings."""

    def get_hf_processor(self, **kwargs: object):
        kwargs.pop(KEY, None)
        return super().get_hf_processor(**kwargs)

    def get_image_processor(self, **kwargs: object):
        kwargs.pop(KEY, None)
        return super().get_image_processor(**kwargs)


class ZooQwen2_5_VLMultiModalProcessor(ZoopruneProcessorMixin, Qwen2_5_VLMultiModalProcessor):
    """Stock Qwen2.5-VL processing, with k (not N) placeholders per image and the plan as a field."""

    def image_token_id(self) -> int:
        return int(self.info.get_hf_config().image_token_id)

    def check_plan(self, config: PruneConfig) -> None:
        missing = config.spec.needs - Qwen2VLAdapter.provides
        if config.spec.prunes and missing:
            raise VLLMValidationError(
                f"zooprune: method {config.method!r} needs {sorted(missing)}, which Qwen2.5-VL does not provide "
                f"(it provides {sorted(Qwen2VLAdapter.provides)}; see 'zooprune methods --matrix')",
                parameter=f"mm_processor_kwargs.{KEY}",
            )
        mm_config = getattr(self.info.ctx.model_config, "multimodal_config", None)
        if config.spec.prunes and getattr(mm_config, "mm_encoder_tp_mode", None) == "data":
            raise VLLMValidationError(
                "zooprune: pruning Qwen2.5-VL images needs the vision tower on every rank "
                "(--mm-encoder-tp-mode weights, vLLM's default), not 'data'",
                parameter=f"mm_processor_kwargs.{KEY}",
            )
        if config.spec.prunes:
            problem = stand_in_problem(config)
            if problem:
                raise VLLMValidationError(f"zooprune: {problem}", parameter=f"mm_processor_kwargs.{KEY}")

    def _postprocess_hf_mm_data(
        self,
        mm_inputs: Mapping[str, object],
        hf_processor_mm_kwargs: Mapping[str, object],
        processed_data: BatchFeature,
    ) -> BatchFeature:
        processed_data = Qwen2_5_VLMultiModalProcessor._postprocess_hf_mm_data(
            self, mm_inputs, hf_processor_mm_kwargs, processed_data
        )
        grids = processed_data.get("image_grid_thw")  # (I, 3): pixel_values are flat patches
        wire = hf_processor_mm_kwargs.get(KEY)
        if grids is not None and wire is not None:
            processed_data[KEY] = [encode(wire) for _ in range(len(grids))]  # per image: (L,) uint8
        return processed_data

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, Any],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        stock = Qwen2_5_VLMultiModalProcessor._get_prompt_updates(
            self, mm_items, {k: v for k, v in hf_processor_mm_kwargs.items() if k != KEY}, out_mm_kwargs
        )
        wire = hf_processor_mm_kwargs.get(KEY)
        config = from_wire(wire)[0] if wire is not None else UNPRUNED
        merge = int(self.info.get_hf_config().vision_config.spatial_merge_size)
        return [
            PromptReplacement(
                modality="image",
                target=update.target,
                replacement=partial(self._image_tokens, config, merge, out_mm_kwargs),
            )
            if update.modality == "image"
            else update
            for update in stock
        ]

    def _image_tokens(
        self, config: PruneConfig, merge: int, out_mm_kwargs: MultiModalKwargsItems, item_idx: int
    ) -> list[int]:
        """The image's placeholder ids: ``planned_tokens`` of its merged tokens and grid (all N for
        precomputed ``image_embeds``, which pass unpruned)."""
        item = out_mm_kwargs["image"][item_idx]
        grid_thw = item["image_grid_thw"].data
        assert isinstance(grid_thw, torch.Tensor)
        n, grid = merged_grid(grid_thw.tolist(), merge)
        return [self.image_token_id()] * (planned_tokens(config, n, grid) if "pixel_values" in item else n)
