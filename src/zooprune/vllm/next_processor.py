"""LLaVA-NeXT's vLLM multimodal processor with zooprune's placeholder count (anyres images).

The count comes from the image size alone: the packed layout (:mod:`zooprune.vllm.anyres`: base
crop, unpadded high-resolution crops, one newline per high-res row), the budget split equally over
the crops as the HF path splits it (``crop_shares``; ``budget="whole"``: one pool), newlines kept
on top (:func:`zooprune.vllm.budget.planned_grouped`).
"""

from __future__ import annotations

from typing import Any

from vllm.model_executor.models.llava_next import LlavaNextMultiModalProcessor, LlavaNextProcessingInfo

from ..config import PruneConfig
from .anyres import crop_groups, packed_sources
from .budget import planned_grouped
from .processor import KEY, ZoopruneProcessorMixin


class ZooLlavaNextProcessingInfo(LlavaNextProcessingInfo):
    """LLaVA-NeXT processing info; the HF processor never sees zooprune's settings."""

    def get_hf_processor(self, **kwargs: object):
        kwargs.pop(KEY, None)
        return super().get_hf_processor(**kwargs)


def planned_anyres(config: PruneConfig, hf_config: Any, height: int, width: int) -> int:
    """Placeholders of a ``height`` x ``width`` anyres image under ``config``."""
    side = hf_config.vision_config.image_size // hf_config.vision_config.patch_size
    groups, grids, newlines = crop_groups(packed_sources(hf_config, (height, width)), side)
    return planned_grouped(config, [int(g.numel()) for g in groups], grids, int(newlines.numel()))


class ZooLlavaNextMultiModalProcessor(ZoopruneProcessorMixin, LlavaNextMultiModalProcessor):
    """Stock LLaVA-NeXT processing, with the planned (not the full) placeholder count per image."""

    def planned_count(self, config: PruneConfig, width: int, height: int) -> int:
        return planned_anyres(config, self.info.get_hf_config(), height, width)
