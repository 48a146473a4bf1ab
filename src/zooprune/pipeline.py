"""The pruning pipeline: encode -> budget -> per-group selection -> checks -> splice -> report.

One function, :func:`prepare`, owns the flow for every model family; a family plugs in through
its adapter's small hooks (``zooprune/adapters/base.py``):

- ``vision_inputs``: family inputs the vision side needs (e.g. InternVL's tiles per image);
- ``encode``: vision tower -> pre-projector features, projected tokens and layout, per image;
- ``model_inputs``: keyword arguments for the stock ``generate`` / ``forward`` (e.g. Qwen's 3-D
  positions, Gemma 3's token types and its ``input_ids`` route).

Methods are pure tensor functions (``zooprune/methods``); the splice is family-agnostic
(``adapters/splice.py``); every :class:`PruneReport` is built here, in :func:`image_report`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .adapters.groups import select_frames, select_grouped
from .adapters.in_llm import InLLMPlan
from .adapters.in_llm_tensors import image_slots
from .adapters.splice import SplicedInputs, splice_visual_tokens
from .config import PruneConfig, resolve_budget
from .methods import Method, PruneContext, Selection
from .report import PruneReport
from .timing import timed

if TYPE_CHECKING:
    from .adapters.base import ImageTokens, VLMAdapter


@dataclass
class PreparedInputs:
    """Pruned language-model inputs plus one report per image.

    For in-LLM methods the inputs hold every visual token and ``plan`` prunes inside the
    language model: run ``generate`` / ``forward`` inside ``with prepared.active():``.

    Attributes:
        spliced: the left-padded pruned sequence (embeddings, mask, ids, source positions).
        reports: one :class:`PruneReport` per image, in order of appearance.
        inputs: keyword arguments for the stock ``model.generate`` / ``model.forward``.
        timings: milliseconds of ``encode`` / ``score`` / ``select`` (then ``prefill`` / ``decode``).
        plan: the in-LLM pruning hooks, or None for pre-LLM methods.
        returns_prompt: the family's ``generate`` echoes the prompt ids before the new tokens.
    """

    spliced: SplicedInputs
    reports: list[PruneReport]
    inputs: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    plan: InLLMPlan | None = None
    returns_prompt: bool = False

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the stock ``model.generate`` / ``model.forward``."""
        return dict(self.inputs)

    def new_tokens(self, generated: Tensor) -> Tensor:
        """Only the generated tokens ``(B, T)`` of a ``generate`` output."""
        return generated[:, self.spliced.input_ids.shape[1] :] if self.returns_prompt else generated

    def active(self) -> AbstractContextManager[Any]:
        """Context in which the model call prunes in-LLM (a no-op for pre-LLM methods)."""
        return self.plan.active() if self.plan is not None else nullcontext()


def check_support(adapter: VLMAdapter, method: Method) -> None:
    """Raise a clear error if the family cannot provide what the method needs."""
    missing = method.needs - adapter.provides
    if missing:
        raise ValueError(
            f"method {method.name!r} needs {', '.join(sorted(missing))}, which this model type "
            f"({adapter.model.config.model_type}) cannot provide; see 'zooprune methods --matrix'"
        )


def prepare(
    adapter: VLMAdapter,
    config: PruneConfig,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    pixel_values: Tensor,
    **extras: Any,
) -> PreparedInputs:
    """Encode images, prune each with ``config``, and rebuild left-padded inputs.

    Args:
        adapter: the model family's adapter around one model instance.
        config: method, budget, seed and the method's options.
        input_ids: ``(B, L)`` processor output with N_i placeholder tokens per image.
        attention_mask: ``(B, L)`` or None.
        pixel_values: processor output for the images, in order of appearance.
        extras: family inputs from the processor (e.g. ``image_sizes``, ``image_grid_thw``).
    """
    method = config.spec
    check_support(adapter, method)
    timings: dict[str, float] = {}
    with torch.no_grad():
        with timed(timings, "encode"):
            images = adapter.encode(pixel_values, method.needs, **adapter.vision_inputs(input_ids, extras))
        counts = [im.projected.shape[0] for im in images]
        text_embeds = adapter.embed(input_ids)  # (B, L, d_l)
        owners = image_owners(input_ids, adapter.image_token_id, counts)
        projector32 = adapter.float32_projector() if "projector" in method.needs else None
        selections = []
        for image, owner in zip(images, owners):
            instruction = (
                adapter.instruction(input_ids[owner], attention_mask, owner, text_embeds) if method.needs_prompt else None
            )
            selections.append(select_image(method, config, image, image_context(config, image, projector32, instruction)))
        kept_tokens = [sel.tokens if sel.tokens is not None else im.projected[sel.indices] for sel, im in zip(selections, images)]
        spliced = splice_visual_tokens(
            input_ids,
            attention_mask,
            text_embeds,
            adapter.image_token_id,
            counts,
            kept_tokens,
            [sel.indices for sel in selections],
            pad_id=adapter.pad_token_id(),
        )
    text_tokens = text_tokens_per_row(input_ids, attention_mask, owners, counts)
    reports = [
        image_report(config, image, sel, int(tokens.shape[0]), text_tokens[owner], timings["encode"], adapter.model_type)
        for image, sel, tokens, owner in zip(images, selections, kept_tokens, owners)
    ]
    for key in ("score", "select"):
        timings[key] = sum(r.timings[key] for r in reports)
    plan = None
    if method.in_llm:
        entered = [int(tokens.shape[0]) for tokens in kept_tokens]  # all N unless it also prunes before
        if method.pre_llm:
            for report, sel, n_0 in zip(reports, selections, entered):
                report.entered, report.stages = sel.indices.cpu(), [(0, n_0)]
        slots = image_slots(spliced.input_ids, adapter.image_token_id, entered)
        hooked = method.bound(fidelity=config.fidelity) if config.fidelity != "improved" else method
        plan = InLLMPlan(hooked, config, adapter.language_model(), slots, reports, spliced.attention_mask)
    inputs = adapter.model_inputs(spliced, input_ids, attention_mask, extras)
    return PreparedInputs(spliced, reports, inputs, timings, plan, adapter.generate_returns_prompt)


def image_context(
    config: PruneConfig,
    image: ImageTokens,
    projector: Callable[[Tensor], Tensor] | None,
    instruction: Tensor | None,
) -> PruneContext:
    """What a method may read about one image (the only place a pre-LLM ``PruneContext`` is built;
    the vLLM plugin builds its contexts here too).

    Args:
        config: method, seed, options and fidelity.
        image: the adapter's encoding of the image.
        projector: the float32 projector, or None when the method does not need it.
        instruction: ``(T, d_l)`` question embeddings, or None when the method does not read the prompt.
    """
    return PruneContext(
        projected=image.projected,
        features=image.features,
        projector=projector,
        grid=image.grid,
        cls_attention=image.cls_attention,
        keys=image.keys,
        instruction=instruction,
        generator=torch.Generator().manual_seed(config.seed),
        options=config.options,
        fidelity=config.fidelity,
        cls_feature=image.cls_feature,
    )


def select_image(method: Method, config: PruneConfig, image: ImageTokens, ctx: PruneContext) -> Selection:
    """Run ``method`` on one image with its share of the budget; checked, timed in ``timings["prune"]``.

    k >= N is no pruning for every method (keep-all reproduces the stock model); in-LLM methods
    keep everything here and choose inside the language model, except those that also prune before
    it (``Method.pre_llm``): they get the final k here and keep what their first stage needs.
    """
    n = image.projected.shape[0]
    if config.fidelity == "reference" and image.groups is not None and method.prunes and not method.in_llm:
        return select_reference_crops(method, config, image, ctx)
    budgeted = image.budgeted_tokens
    if not method.prunes:
        k = budgeted
    elif config.fidelity == "reference":
        k = method.reference_budget(config.keep, budgeted)
    else:
        k = resolve_budget(config.keep, budgeted)
    timings: dict[str, float] = {}
    with timed(timings, "prune"):
        if k >= budgeted or not method.pre_llm:
            sel = Selection(torch.arange(n, device=image.projected.device))
        elif image.groups is not None:
            whole = config.budget == "whole"  # one pool, not per-crop shares
            groups = [torch.cat(image.groups).sort().values] if whole else image.groups
            sel = select_grouped(method, ctx, groups, None if whole else image.group_grids, image.always_keep, k)
        else:
            sel = method(ctx, k)
    check_selection(sel, n, method.name)
    sel.timings = {"score": 0.0, "select": timings["prune"], **sel.timings}
    return sel


def select_reference_crops(method: Method, config: PruneConfig, image: ImageTokens, ctx: PruneContext) -> Selection:
    """A multi-crop image (LLaVA-NeXT anyres) under ``fidelity="reference"``, as the method's reference
    code treats the packed sequence (``Method.reference_crops``): ``"one-pool"`` = one pool of every packed
    token, newlines included, k from all of them (DivPrune); ``"frames"`` = ZOO-Prune's per-crop rule
    (:func:`zooprune.adapters.groups.select_frames`). Otherwise a clear error."""
    n = image.projected.shape[0]
    timings: dict[str, float] = {}
    with timed(timings, "prune"):
        if method.reference_crops == "one-pool":
            k = method.reference_budget(config.keep, n)
            sel = Selection(torch.arange(n, device=image.projected.device)) if k >= n else method(ctx, k)
        elif method.reference_crops == "frames" and image.max_tokens is not None:
            sel = select_frames(method, ctx, image.groups or [], image.always_keep, config.keep, image.max_tokens)
        else:
            why = (
                "its reference code has no multi-crop handling this model's packing can reproduce"
                if method.reference_crops != "frames"
                else "its reference crop rule (llava_arch_llava_next_7b.py) is defined for LLaVA-NeXT only"
            )
            raise ValueError(
                f"method {method.name!r} with fidelity='reference' cannot prune this multi-crop image "
                f"({image.budgeted_tokens} tokens in {len(image.groups or [])} crops): {why}; "
                "use fidelity='improved' (see docs/fidelity.md)"
            )
    check_selection(sel, n, method.name)
    sel.timings = {"score": 0.0, "select": timings["prune"], **sel.timings}
    return sel


def image_report(
    config: PruneConfig,
    image: ImageTokens,
    sel: Selection,
    tokens_after: int,
    text_tokens: int,
    encode_ms: float,
    model_type: str,
) -> PruneReport:
    """The :class:`PruneReport` of one image (the only place one is built)."""
    return PruneReport(
        method=config.method,
        keep=config.keep,
        tokens_before=int(image.projected.shape[0]),
        tokens_after=tokens_after,
        kept_indices=sel.indices.cpu(),
        scores=None if sel.scores is None else sel.scores.float().cpu(),
        grid=image.grid,
        timings={**sel.timings, "encode": encode_ms},
        text_tokens=text_tokens,
        model_type=model_type,
        estimator=sel.estimator,
        fidelity=config.fidelity,
    )


def text_tokens_per_row(
    input_ids: Tensor, attention_mask: Tensor | None, owners: list[int], tokens_per_image: list[int]
) -> list[int]:
    """Non-visual, non-padding tokens of each prompt (batch row)."""
    lengths = (
        attention_mask.sum(dim=1) if attention_mask is not None else torch.full((len(input_ids),), input_ids.shape[1])
    ).tolist()
    for owner, n in zip(owners, tokens_per_image):
        lengths[owner] -= n
    return [int(x) for x in lengths]


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
