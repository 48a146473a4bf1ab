"""The adapter contract: where a model family's visual tokens live and how inputs are rebuilt.

An adapter wraps one model instance. Family files implement :meth:`VLMAdapter.encode`
(vision tower -> pre-projector features -> projected tokens, per image); the shared
:meth:`VLMAdapter.prepare` runs the method on every image and splices the kept tokens into
``inputs_embeds`` for a stock ``model.generate`` / ``model.forward``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..config import PruneConfig, resolve_budget
from ..methods import PruneContext, Selection, get_method
from ..methods.zoo import float32_projector
from ..report import PruneReport, timed
from .groups import select_grouped
from .in_llm import InLLMPlan, image_slots
from .splice import SplicedInputs, splice_visual_tokens


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
    """

    projected: Tensor
    features: Tensor | None = None
    grid: tuple[int, int] | None = None
    cls_attention: Tensor | None = None
    keys: Tensor | None = None
    groups: list[Tensor] | None = None
    group_grids: list[tuple[int, int] | None] | None = None
    always_keep: Tensor | None = None

    @property
    def budgeted_tokens(self) -> int:
        """Tokens the budget applies to (all but ``always_keep``)."""
        if self.groups is None:
            return int(self.projected.shape[0])
        return sum(int(g.numel()) for g in self.groups)


@dataclass
class PreparedInputs:
    """Pruned language-model inputs plus one report per image.

    For in-LLM methods the inputs hold every visual token and ``plan`` prunes inside the
    language model: run ``generate`` / ``forward`` inside ``with prepared.active():``.
    """

    spliced: SplicedInputs
    reports: list[PruneReport]
    timings: dict[str, float] = field(default_factory=dict)
    plan: InLLMPlan | None = None
    position_ids: Tensor | None = None
    extra: dict[str, Tensor] = field(default_factory=dict)
    #: pass ``input_ids`` (k placeholders per image) + ``mm_encoder_outputs`` instead of
    #: ``inputs_embeds``, for models whose ``generate`` does not take embeddings (Gemma 3)
    ids_route: bool = False
    image_token_id: int = -1

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the stock ``model.generate`` / ``model.forward``."""
        if self.ids_route:
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            ids = self.spliced.input_ids
            kept = self.spliced.inputs_embeds[ids == self.image_token_id]  # (sum k_i, d), row-major
            encoded = {"image": BaseModelOutputWithPooling(pooler_output=kept)}
            kwargs = {
                "input_ids": ids,
                "attention_mask": self.spliced.attention_mask,
                "mm_encoder_outputs": encoded,
            }
        else:
            kwargs = {
                "inputs_embeds": self.spliced.inputs_embeds,
                "attention_mask": self.spliced.attention_mask,
            }
        if self.position_ids is not None:  # families with explicit (e.g. 3-D mRoPE) positions
            kwargs["position_ids"] = self.position_ids
        return {**kwargs, **self.extra}  # family inputs such as Gemma 3's token_type_ids

    def new_tokens(self, generated: Tensor) -> Tensor:
        """Only the generated tokens ``(B, T)`` of a ``generate`` output (the ids route returns the prompt too)."""
        return generated[:, self.spliced.input_ids.shape[1] :] if self.ids_route else generated

    def active(self) -> AbstractContextManager[Any]:
        """Context in which the model call prunes in-LLM (a no-op for pre-LLM methods)."""
        return self.plan.active() if self.plan is not None else nullcontext()


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

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)

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

    def prepare(
        self,
        config: PruneConfig,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        pixel_values: Tensor,
        **extras: Any,
    ) -> PreparedInputs:
        """Encode images, prune each with ``config``, and rebuild left-padded inputs.

        Args:
            config: method, budget and seed.
            input_ids: ``(B, L)`` processor output with N_i placeholder tokens per image.
            attention_mask: ``(B, L)`` or None.
            pixel_values: processor output for the images, in order of appearance.
            extras: family inputs from the processor (e.g. ``image_sizes``).
        """
        method = get_method(config.method)
        missing = method.needs - self.provides
        if missing:
            raise ValueError(
                f"method {method.name!r} needs {', '.join(sorted(missing))}, which this model type "
                f"({self.model.config.model_type}) cannot provide; see 'zooprune methods --matrix'"
            )
        timings: dict[str, float] = {}
        with torch.no_grad():
            with timed(timings, "encode"):
                images = self.encode(pixel_values, method.needs, **extras)
            text_embeds = self.embed(input_ids)  # (B, L, d_l)
            owners = image_owners(input_ids, self.image_token_id, [im.projected.shape[0] for im in images])
            projector32 = self.float32_projector() if "projector" in method.needs else None
            kept_tokens, kept_sources, reports = [], [], []
            for i, image in enumerate(images):
                n = image.projected.shape[0]
                # tokens to keep (of those the budget applies to)
                k = n if method.name == "none" else resolve_budget(config.keep, image.budgeted_tokens)
                ctx = PruneContext(
                    projected=image.projected,
                    features=image.features,
                    projector=projector32,
                    grid=image.grid,
                    cls_attention=image.cls_attention,
                    keys=image.keys,
                    instruction=self.instruction(input_ids[owners[i]], attention_mask, owners[i], text_embeds)
                    if "instruction" in method.needs
                    else None,
                    generator=torch.Generator().manual_seed(config.seed),
                    options=dict(config.options),
                )
                image_timings: dict[str, float] = {}
                with timed(image_timings, "prune"):
                    # k >= N is no pruning for every method (keep-all reproduces the stock model);
                    # in-LLM methods keep everything here and choose inside the language model.
                    everything = k >= image.budgeted_tokens or method.stage == "in_llm"
                    if everything:
                        sel = Selection(torch.arange(n, device=image.projected.device))
                    elif image.groups is not None:
                        whole = config.options.get("budget") == "whole"  # one pool, not per-crop shares
                        groups = [torch.cat(image.groups).sort().values] if whole else image.groups
                        grids = None if whole else image.group_grids
                        sel = select_grouped(method, ctx, groups, grids, image.always_keep, k)
                    else:
                        sel = method(ctx, k)
                check_selection(sel, n, method.name)
                tokens = sel.tokens if sel.tokens is not None else image.projected[sel.indices]
                kept_tokens.append(tokens)
                kept_sources.append(sel.indices)
                image_timings = {"score": 0.0, "select": image_timings["prune"], **sel.timings}
                reports.append(
                    PruneReport(
                        method=method.name,
                        keep=config.keep,
                        tokens_before=n,
                        tokens_after=int(tokens.shape[0]),
                        kept_indices=sel.indices.cpu(),
                        scores=None if sel.scores is None else sel.scores.float().cpu(),
                        grid=image.grid,
                        timings=image_timings,
                    )
                )
                timings["score"] = timings.get("score", 0.0) + image_timings["score"]
                timings["select"] = timings.get("select", 0.0) + image_timings["select"]
            spliced = splice_visual_tokens(
                input_ids,
                attention_mask,
                text_embeds,
                self.image_token_id,
                [im.projected.shape[0] for im in images],
                kept_tokens,
                kept_sources,
                pad_id=self.pad_token_id(),
            )
        row_lengths = (
            attention_mask.sum(dim=1)
            if attention_mask is not None
            else torch.full((len(input_ids),), input_ids.shape[1])
        ).tolist()
        visual_per_row = [0] * len(row_lengths)
        for owner, r in zip(owners, reports):
            visual_per_row[owner] += r.tokens_before
        for owner, r in zip(owners, reports):
            r.timings["encode"] = timings["encode"]
            r.text_tokens = int(row_lengths[owner]) - visual_per_row[owner]
        plan = None
        if method.stage == "in_llm":
            plan = InLLMPlan(
                method,
                config,
                self.language_model(),
                image_slots(spliced.input_ids, self.image_token_id, [im.projected.shape[0] for im in images]),
                reports,
                spliced.attention_mask,
            )
        return PreparedInputs(spliced, reports, timings, plan)

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


def image_owners(input_ids: Tensor, image_token_id: int, tokens_per_image: list[int]) -> list[int]:
    """Which prompt (batch row) each image belongs to, from the placeholder counts per row."""
    counts = (input_ids == image_token_id).sum(dim=1).tolist()
    owners, row, filled = [], 0, 0
    for n in tokens_per_image:
        while row < len(counts) and filled >= counts[row]:
            row, filled = row + 1, 0
        if row >= len(counts):
            raise ValueError(
                f"{len(tokens_per_image)} images were given but the prompts only hold placeholders for "
                f"{len(owners)}: every image needs an image token in its prompt"
            )
        owners.append(row)
        filled += n
    return owners


def check_selection(sel: Selection, n: int, method: str) -> None:
    """Validate a method's output: 1-D, sorted, unique, in range, tokens consistent."""
    idx = sel.indices
    if idx.dim() != 1 or idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"method {method!r} returned indices of shape {tuple(idx.shape)} / {idx.dtype}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"method {method!r} returned indices outside [0, {n})")
    if idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()):
        raise ValueError(f"method {method!r} returned indices that are not sorted and unique")
    if sel.tokens is not None and sel.tokens.shape[0] < idx.numel():
        raise ValueError(f"method {method!r} returned fewer tokens than kept indices")
