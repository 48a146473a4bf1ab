"""The adapter contract: where a model family's visual tokens live and how inputs are rebuilt.

An adapter wraps one model instance. Family files implement :meth:`VLMAdapter.encode`
(vision tower -> pre-projector features -> projected tokens, per image) and
:meth:`VLMAdapter.projector`, and override the small hooks :meth:`~VLMAdapter.vision_inputs` and
:meth:`~VLMAdapter.model_inputs` where the family needs it. The flow itself (selection, splice,
reports) is :func:`zooprune.pipeline.prepare`, the same for every family. Where each token lands
on the image (what ``zooprune.viz`` draws) is the classmethod :meth:`VLMAdapter.token_layout`, next
to the code that produces the tokens: one crop cut into the token grid here, anyres / tiles in the
family files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..geometry import View, crop_geometry, grid_view, image_processor_of, report_grid
from ..report import PruneReport
from ..tensors import float32_projector
from .splice import SplicedInputs


@dataclass
class ImageTokens:
    """One image's visual tokens before pruning.

    Attributes:
        projected: ``(N, d_l)`` projected tokens (what the language model would see).
        features: ``(N, d_v)`` pre-projector features.
        grid: ``(rows, cols)`` token grid in image order, or None.
        cls_attention: ``(N,)`` head-averaged [CLS] attention at the read vision layer, or None.
        keys: ``(N, H, d_h)`` attention keys per head at that layer, or None.
        groups: per crop, ``(n_g,)`` indices into the N tokens, each pruned with its own share
            of the budget (see ``groups.py``); None = the whole image is one group.
        group_grids: per crop, its ``(rows, cols)`` grid or None.
        always_keep: ``(n_keep,)`` indices kept on top of the budget (e.g. image newlines), or None.
        cls_feature: ``(d_v,)`` the vision [CLS] hidden state at the read layer (filled with
            ``cls_attention``; VisionZip's reference fidelity keeps it), or None.
        max_tokens: budgeted tokens of the largest image of this model (LLaVA-NeXT: (1 + max crops)
            x tokens per crop, 2880 for llava-v1.6), the base of ZOO-Prune's reference budget on
            multi-crop images, or None.
    """

    projected: Tensor
    features: Tensor | None = None
    grid: tuple[int, int] | None = None
    cls_attention: Tensor | None = None
    keys: Tensor | None = None
    groups: list[Tensor] | None = None
    group_grids: list[tuple[int, int] | None] | None = None
    always_keep: Tensor | None = None
    cls_feature: Tensor | None = None
    max_tokens: int | None = None

    @property
    def budgeted_tokens(self) -> int:
        """Tokens the budget applies to (all but ``always_keep``)."""
        if self.groups is None:
            return int(self.projected.shape[0])
        return sum(int(g.numel()) for g in self.groups)


class VLMAdapter:
    """Base class of the per-family adapters (one instance per model instance)."""

    #: ``config.model_type`` values this adapter handles.
    model_types: ClassVar[tuple[str, ...]] = ()
    #: transformers class used by :func:`zooprune.load` for this family.
    model_class: ClassVar[str] = ""
    #: processor outputs besides input_ids / attention_mask / pixel_values that ``encode`` reads.
    vision_input_names: ClassVar[tuple[str, ...]] = ()
    #: the ``PruneContext`` needs this family can fill (drives the support matrix).
    provides: ClassVar[frozenset[str]] = frozenset()
    #: the family's ``generate`` returns the prompt ids before the new tokens (the ids route).
    generate_returns_prompt: ClassVar[bool] = False

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._projector32: Callable[[Tensor], Tensor] | None = None

    # ---- family specifics -------------------------------------------------------------
    def encode(self, pixel_values: Tensor, needs: frozenset[str], **extras: Any) -> list[ImageTokens]:
        """Run the vision side; one :class:`ImageTokens` per image, in batch order."""
        raise NotImplementedError

    def projector(self) -> nn.Module:
        """The model's projector module (pre-projector features -> language-model embeddings)."""
        raise NotImplementedError

    def vision_inputs(self, input_ids: Tensor, extras: dict[str, Any]) -> dict[str, Any]:
        """Hook: the keyword inputs of :meth:`encode` from the processor's ``extras`` (default: as is)."""
        return extras

    def model_inputs(
        self, spliced: SplicedInputs, input_ids: Tensor, attention_mask: Tensor | None, extras: dict[str, Any]
    ) -> dict[str, Any]:
        """Hook: keyword arguments for the stock ``generate`` / ``forward`` on the pruned sequence.

        Args:
            spliced: the pruned, left-padded sequence.
            input_ids / attention_mask: the processor's original ``(B, L)`` prompt (for families that
                derive positions from it).
            extras: the processor's other outputs (e.g. ``image_grid_thw``).
        """
        return {"inputs_embeds": spliced.inputs_embeds, "attention_mask": spliced.attention_mask}

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)

    @property
    def model_type(self) -> str:
        return str(self.model.config.model_type)

    @classmethod
    def token_layout(cls, image_size: tuple[int, int], report: PruneReport, processor: Any) -> list[View]:
        """Where each of ``report``'s tokens lies on the original ``(width, height)`` image.

        Default (one crop, e.g. LLaVA-1.5, Gemma 3): a single ``image`` view, the processor's
        resize + center crop (see :func:`zooprune.geometry.crop_geometry`) cut into ``report.grid``.

        Args:
            image_size: the original image's ``(width, height)``.
            report: the image's report (``grid``, ``tokens_before``).
            processor: the model's processor or its image processor (resize / crop settings).
        Returns:
            views whose ``indices`` together cover every token that shows a region of the image.
        """
        grid = report_grid(report)
        return [
            grid_view("image", image_size, grid, crop_geometry(image_size, image_processor_of(processor)).box)
        ]

    # ---- shared -----------------------------------------------------------------------
    def float32_projector(self) -> Callable[[Tensor], Tensor]:
        """The projector in float32 for scoring: the module itself if it is float32, else a copy
        made once per adapter (attach again after changing a half-precision model's weights)."""
        if self._projector32 is None:
            self._projector32 = float32_projector(self.projector())
        return self._projector32

    def embed(self, input_ids: Tensor) -> Tensor:
        """``(B, L)`` ids -> ``(B, L, d_l)`` input embeddings (placeholders embedded as is)."""
        return self.model.get_input_embeddings()(input_ids)

    def language_model(self) -> nn.Module:
        """The decoder stack (``.layers``, ``.norm``) that in-LLM methods hook into."""
        return self.model.model.language_model

    def instruction(
        self, ids: Tensor, attention_mask: Tensor | None, row: int, text_embeds: Tensor
    ) -> Tensor:
        """``(T, d_l)`` embeddings of prompt ``row``'s text after its last image (the question).

        The chat template's prefix (system / role markers before the image) is left out; its
        suffix (e.g. "ASSISTANT:") cannot be told apart generically and stays.
        """
        slots = (ids == self.image_token_id).nonzero().flatten()
        start = int(slots[-1]) + 1 if slots.numel() else 0
        keep = torch.zeros_like(ids, dtype=torch.bool)
        keep[start:] = True
        if attention_mask is not None:
            keep &= attention_mask[row].bool()
        if not keep.any():  # image at the very end: fall back to all text tokens
            keep = ids != self.image_token_id
        return text_embeds[row][keep]

    def pad_token_id(self) -> int:
        pad = getattr(self.model.generation_config, "pad_token_id", None)
        if pad is None:
            pad = getattr(self.model.config, "pad_token_id", None)
        return int(pad) if isinstance(pad, int) else 0
