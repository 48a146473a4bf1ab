"""vLLM's ``LlavaNextForConditionalGeneration`` (anyres) with zooprune's pre-LLM pruning.

Per image: vLLM's vision tower and projector on every crop, vLLM's own packing (base crop, then the
unpadded high-resolution crops with a newline token after each row); then, as the HF path does
(``zooprune.adapters.llava_next``), the budget split equally over the crops, each crop selected
on its own with its grid, the newlines kept on top. Where every packed token came from is
:func:`zooprune.vllm.anyres.packed_sources`, checked against vLLM's packing on every call.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from vllm.model_executor.models.llava import LlavaDummyInputsBuilder
from vllm.model_executor.models.llava_next import LlavaNextForConditionalGeneration
from vllm.multimodal import MULTIMODAL_REGISTRY

from ..adapters.base import ImageTokens
from ..pipeline import image_report
from .anyres import crop_groups, packed_sources
from .budget import planned_grouped
from .model import Plan, ZoopruneModelMixin
from .next_processor import ZooLlavaNextMultiModalProcessor, ZooLlavaNextProcessingInfo
from .select import prune_image
from .vision import tower_features


@MULTIMODAL_REGISTRY.register_processor(
    ZooLlavaNextMultiModalProcessor, info=ZooLlavaNextProcessingInfo, dummy_inputs=LlavaDummyInputsBuilder
)
class ZooLlavaNextForConditionalGeneration(ZoopruneModelMixin, LlavaNextForConditionalGeneration):
    """LLaVA-NeXT in vLLM, pruning each anyres image to its request's budget before the language model."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._zooprune_init(vllm_config)

    def prune_images(self, image_input: Any, plans: list[Plan]) -> tuple[Tensor, ...]:
        """Per image ``(P_i, 3, h, w)`` crops + ``image_sizes`` ``(I, 2)`` -> per image ``(k_i, d_l)``."""
        pixel_values = image_input["pixel_values"]
        per_image = list(pixel_values) if isinstance(pixel_values, (list, tuple)) else list(pixel_values.unbind(0))
        counts = [int(p.shape[0]) for p in per_image]
        needs = frozenset().union(*(config.spec.needs for config, _ in plans))
        vision = tower_features(self, torch.cat(per_image), needs)
        features = vision["features"]  # (P_total, n, d_v)
        projected = self.multi_modal_projector(features)  # (P_total, n, d_l)
        sizes = image_input["image_sizes"]
        side = self.config.vision_config.image_size // self.config.vision_config.patch_size
        kept, start = [], 0
        for i, ((config, question), count) in enumerate(zip(plans, counts)):
            crops = slice(start, start + count)
            start += count
            size = tuple(int(x) for x in sizes[i].tolist())
            packed = self._merge_image_patch_embeddings(sizes[i], projected[crops], strategy="spatial_unpad")
            sources = packed_sources(self.config, size)
            image = self._image_tokens(packed, sources, side, features[crops], vision, crops, projected[crops])
            groups, grids = image.groups or [], image.group_grids or []
            expected = planned_grouped(
                config, [int(g.numel()) for g in groups], list(grids), int(image.always_keep.numel())
            )
            tokens, sel = prune_image(
                config, image, expected, self.zooprune_projector, self.question_embedder(question, packed.device)
            )
            self.zooprune_reports.append(
                image_report(config, image, sel, int(tokens.shape[0]), 0, 0.0, str(self.config.model_type))
            )
            kept.append(tokens)
        return tuple(kept)

    @staticmethod
    def _image_tokens(
        packed: Tensor,
        sources: Tensor,
        side: int,
        feats: Tensor,
        vision: dict[str, Tensor | None],
        crops: slice,
        projected: Tensor,
    ) -> ImageTokens:
        """One image's packed ``(M, d_l)`` tokens with their features, crops and newlines (HF layout)."""
        if packed.shape[0] != sources.shape[0]:
            raise RuntimeError(
                f"zooprune: vLLM packed {packed.shape[0]} tokens, the anyres layout has {sources.shape[0]}"
            )
        is_token = sources[:, 0] >= 0
        crop, pos = sources[:, 0].clamp(min=0), sources[:, 1].clamp(min=0)
        if not torch.equal(packed[is_token], projected[crop, pos][is_token]):
            raise RuntimeError("zooprune: vLLM's anyres packing differs from zooprune.vllm.anyres.packed_sources")
        groups, grids, newlines = crop_groups(sources, side)
        cls_attn, keys = vision["cls_attention"], vision["keys"]
        return ImageTokens(
            projected=packed,
            features=feats[crop, pos] * is_token[:, None].to(feats.dtype),
            grid=None,
            cls_attention=None if cls_attn is None else cls_attn[crops][crop, pos] * is_token,
            keys=None if keys is None else keys[crops][crop, pos],
            groups=groups,
            group_grids=grids,
            always_keep=newlines,
        )
