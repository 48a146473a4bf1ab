"""vLLM's ``Qwen2_5_VLForConditionalGeneration`` with zooprune's pre-LLM pruning of images.

Per image, as the HF adapter (``zooprune.adapters.qwen2_vl``): vLLM's vision tower; the merged
tokens ``(N, d_l)`` are the tower's output, a token's pre-projector feature is its 2 x 2 patch
group ``(4 d_v,)`` (the merger's input, captured by wrapping this instance's merger for the call
and put back in natural order with vLLM's own ``reverse_indices``); the method scores through a
float32 copy of the merger (:func:`float32_merger`, wrapped as the HF adapter's ``GroupMerger``)
and keeps k tokens, k = the processor's placeholders (:mod:`zooprune.vllm.qwen_processor`).

Positions (:mod:`zooprune.vllm.qwen_positions`): a kept token keeps its 3-D M-RoPE position in the
unpruned grid and the text after the image keeps its unpruned offset, as ``zooprune.load`` does.
vLLM asks the model for a request's positions (``SupportsMRoPE.get_mrope_input_positions``) when
the request arrives, before it encodes the images, from the request's processed inputs (pixels,
grid, zooprune plan): for a pruning request this class selects there and keeps the kept
embeddings for ``embed_multimodal`` (:attr:`SELECTIONS` recent ones, keyed by content), so each
image is encoded once. vLLM's after-the-encoder route (``SupportsMultiModalPruning.
recompute_mrope_positions``, EVS's) is not used for that: vLLM 0.32 calls it only with
``--video-pruning-rate`` > 0 (which also prunes videos) and never in its CPU runner. When that
route is on, the image embeddings carry its 4 position channels, as stock vLLM's do, with the
same positions.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ..adapters.base import ImageTokens
from ..adapters.qwen2_vl import GroupMerger
from ..pipeline import image_report
from .budget import planned_tokens
from .model import Plan, ZoopruneModelMixin, wire_rows
from .projector import linear_from
from .qwen_positions import kept_sources, media_positions, prompt_positions
from .qwen_processor import ZooQwen2_5_VLMultiModalProcessor, ZooQwen2_5_VLProcessingInfo, merged_grid
from .request import KEY, UNPRUNED, decode, from_wire
from .select import prune_image

#: How many selections made for positions wait for ``embed_multimodal`` at most.
SELECTIONS = 64


def float32_merger(merger: nn.Module) -> GroupMerger:
    """vLLM's ``Qwen2_5_VisionPatchMerger`` (RMSNorm ``ln_q`` per patch, column- / row-parallel MLP)
    as a float32, full-weight ``GroupMerger``: ``(..., 4 d_v) -> (..., d_l)``, the HF adapter's map."""
    ln = merger.ln_q
    norm = nn.RMSNorm(
        ln.weight.shape[0], eps=ln.variance_epsilon, dtype=torch.float32, device=ln.weight.device
    )
    with torch.no_grad():
        norm.weight.copy_(ln.weight.detach().float())
    first = linear_from(merger.mlp[0], shard_dim=0, bias_sharded=True)
    second = linear_from(merger.mlp[2], shard_dim=1, bias_sharded=False)
    copy = nn.Module()
    copy.ln_q, copy.mlp = norm, nn.Sequential(first, nn.GELU(), second)
    return GroupMerger(copy, int(ln.weight.shape[0])).eval().requires_grad_(False)


class InputCapture(nn.Module):
    """Calls ``module`` and keeps its input (vLLM's compile wrapper on the merger skips module hooks)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.seen: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        self.seen = x.detach()
        return self.module(x)


def content_key(pixels: Tensor, grid_thw: list[int], wire: Tensor) -> str:
    """A key of one image's ``(P, C)`` patches, grid and ``(L,)`` plan bytes."""
    digest = hashlib.sha256(pixels.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    digest.update(repr(grid_thw).encode())
    digest.update(bytes(wire.to(torch.uint8).cpu().tolist()))
    return digest.hexdigest()


@MULTIMODAL_REGISTRY.register_processor(
    ZooQwen2_5_VLMultiModalProcessor,
    info=ZooQwen2_5_VLProcessingInfo,
    dummy_inputs=Qwen2_5_VLDummyInputsBuilder,
)
class ZooQwen2_5_VLForConditionalGeneration(ZoopruneModelMixin, Qwen2_5_VLForConditionalGeneration):
    """Qwen2.5-VL in vLLM, pruning each image to its request's budget before the language model."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._zooprune_init(vllm_config)
        self._zooprune_selected: OrderedDict[str, tuple[Tensor, Tensor]] = OrderedDict()

    def float32_projector(self) -> nn.Module:
        return float32_merger(self.visual.merger)

    def get_mrope_input_positions(
        self, input_tokens: list[int], mm_features: list[Any]
    ) -> tuple[Tensor, int]:
        """``(3, L)`` positions and decode delta; for pruned images from their selection (made here)."""
        merge = self.visual.spatial_merge_size
        media, pruned = [], False
        for feature in mm_features:
            data = feature.data
            if feature.modality == "image":
                grid = [int(x) for x in data["image_grid_thw"].data.tolist()]
                wire = data[KEY].data if KEY in data else None
                config, question = from_wire(decode(wire)) if wire is not None else (UNPRUNED, None)
                sources = None
                if config.spec.prunes and "pixel_values" in data:  # image_embeds pass unpruned
                    pruned = True
                    pixels = data["pixel_values"].data
                    key = content_key(pixels, grid, wire)
                    tokens, sources = self._select(pixels, grid, (config, question))
                    self._zooprune_selected[key] = (tokens, sources)
                    while len(self._zooprune_selected) > SELECTIONS:
                        self._zooprune_selected.popitem(last=False)
                pos = media_positions(grid, merge, sources)
            elif feature.modality == "video":
                grid = [int(x) for x in data["video_grid_thw"].data.tolist()]
                seconds = data.get("second_per_grid_ts")
                t_factor = (float(seconds.data.item()) if seconds else 1.0) * getattr(
                    self.config.vision_config, "tokens_per_second", 1.0
                )
                pos = media_positions(grid, merge, None, t_factor)
                if self.is_multimodal_pruning_enabled:  # EVS: vLLM recomputes after encoding
                    pos = pos[: feature.mm_position.length]
            else:
                return super().get_mrope_input_positions(input_tokens, mm_features)
            if pos.shape[0] != feature.mm_position.length:
                raise RuntimeError(
                    f"zooprune: {feature.modality} has {feature.mm_position.length} placeholders, {pos.shape[0]} positions"
                )
            media.append((int(feature.mm_position.offset), pos))
        if not pruned:
            return super().get_mrope_input_positions(input_tokens, mm_features)
        return prompt_positions(len(input_tokens), media)

    def embed_multimodal(self, **kwargs: object) -> Any:
        """Per image ``(k_i, d_l)`` embeddings (``+ 4`` position channels on vLLM's pruning route),
        per video vLLM's own; in the order of the request's modalities."""
        wires = kwargs.pop(KEY, None)
        rows = wire_rows(wires) if wires is not None else []
        plans = [from_wire(decode(row)) for row in rows]
        if not any(config.spec.prunes for config, _ in plans):
            return super().embed_multimodal(**kwargs)  # stock vLLM, unpruned
        out: tuple[Tensor, ...] = ()
        for modality, item in self._parse_and_validate_multimodal_inputs(**kwargs).items():
            if modality == "image":
                out += self._zooprune_images(item, plans, rows)
            else:
                videos = self._process_video_input(item)
                if self.is_multimodal_pruning_enabled:
                    videos = self._postprocess_video_embeds_evs(videos, item)
                out += tuple(videos)
        return out

    def _zooprune_images(
        self, image_input: Any, plans: list[Plan], wires: list[Tensor]
    ) -> tuple[Tensor, ...]:
        """Per image ``(k_i, d_l)``: the selection made for its positions, or made now."""
        grids = [[int(x) for x in g] for g in image_input["image_grid_thw"].tolist()]
        merge = self.visual.spatial_merge_size
        if image_input["type"] != "pixel_values":  # precomputed embeddings pass unpruned
            embeds = self._process_image_input(image_input)
            if not self.is_multimodal_pruning_enabled:
                return tuple(embeds)
            return tuple(
                torch.cat([e, media_positions(g, merge).to(e)], dim=1) for e, g in zip(embeds, grids)
            )
        if self.use_data_parallel:
            raise ValueError("zooprune prunes Qwen2.5-VL images with the vision tower on every rank")
        pixels = image_input["pixel_values"].split([t * h * w for t, h, w in grids])
        out = []
        for patches, grid, plan, wire in zip(pixels, grids, plans, wires):
            key = content_key(patches, grid, wire)
            if key in self._zooprune_selected:
                tokens, sources = self._zooprune_selected.pop(key)
            else:
                tokens, sources = self._select(patches, grid, plan)
            if self.is_multimodal_pruning_enabled:  # vLLM's route strips these 4 channels
                tokens = torch.cat([tokens, media_positions(grid, merge, sources).to(tokens)], dim=1)
            out.append(tokens)
        return tuple(out)

    def _select(self, pixels: Tensor, grid_thw: list[int], plan: Plan) -> tuple[Tensor, Tensor]:
        """One image's ``(P, C t p p)`` patches -> kept ``(k, d_l)`` tokens and ``(k,)`` grid sources."""
        config, question = plan
        visual = self.visual
        merge = visual.spatial_merge_size
        meta = visual.prepare_encoder_metadata([grid_thw])
        merger = visual.merger
        visual.merger = capture = InputCapture(merger)  # this instance only, restored below
        try:
            with torch.no_grad():
                projected = visual(
                    pixels.to(visual.device), grid_thw=[grid_thw], encoder_metadata=meta
                )  # (N, d_l)
        finally:
            visual.merger = merger
        x = capture.seen  # (P, 1, d_v): the merger's input, window order
        features = x.reshape(-1, merge * merge * x.shape[-1])[meta["reverse_indices"]]  # (N, 4 d_v)
        n, grid = merged_grid(grid_thw, merge)
        image = ImageTokens(projected=projected, features=features, grid=grid)
        with torch.no_grad():
            tokens, sel = prune_image(
                config,
                image,
                planned_tokens(config, n, grid),
                self.zooprune_projector,
                self.question_embedder(question, projected.device),
            )
        self.zooprune_reports.append(
            image_report(config, image, sel, int(tokens.shape[0]), 0, 0.0, "qwen2_5_vl")
        )
        return tokens, kept_sources(sel, int(tokens.shape[0]), n)
