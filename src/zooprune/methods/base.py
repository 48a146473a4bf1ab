"""The method contract: what a pruning method reads, what it returns, how it is registered.

A method is a pure tensor function ``fn(ctx: PruneContext, k: int) -> Selection`` for one
image (or one crop). It never imports transformers: model-family knowledge lives in
``zooprune.adapters``, which fill a :class:`PruneContext` with exactly what the method
declares in ``needs`` and splice the result back into the language model's inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import Tensor

from ..registry import Registry
from ..tensors import check_finite
from .options import MethodOptions

#: What a method can ask the adapter for (besides ``projected``, which is always there).
NEEDS = frozenset({"features", "projector", "grid", "cls_attention", "keys", "instruction", "llm_layer"})

#: ``"improved"`` (this library's float32, seeded, batched semantics) or ``"reference"`` (the
#: authors' reference code's semantics where the checkpoint allows; see ``docs/fidelity.md``).
Fidelity = Literal["improved", "reference"]
FIDELITIES: tuple[str, ...] = ("improved", "reference")

#: How a method's reference code treats an image made of several crops (LLaVA-NeXT anyres):
#: ``"frames"``: ZOO-Prune's ``llava_arch_llava_next_7b.py``: k = int(int(max_tokens * r) / crops) per
#: crop, newline indices offset by the base crop (see ``adapters/groups.py::select_frames``);
#: ``"one-pool"``: one pool of every packed token, newlines included (DivPrune); ``"unsupported"``.
ReferenceCrops = Literal["frames", "one-pool", "unsupported"]

#: Where a method prunes (``Method.stage``).
MethodStage = Literal["pre_llm", "in_llm", "pre_and_in_llm"]


@dataclass
class PruneContext:
    """Everything a method may read about one image (or one crop of it).

    Attributes:
        projected: ``(N, d_l)`` projected visual tokens, as the language model would see them.
        features: ``(N, d_v)`` pre-projector features (the projector's input), or None.
        projector: callable ``(..., d_v) -> (..., d_l)`` in float32 (a float32 copy of the
            model's projector), or None.
        grid: ``(rows, cols)`` of the token grid in image order (``rows * cols == N``), or None.
        cls_attention: ``(N,)`` head-averaged attention from the vision [CLS] token to each
            patch at the vision layer the model reads, or None.
        keys: ``(N, H, d_h)`` vision-attention keys per head at that layer, or None.
        instruction: ``(T, d_l)`` input embeddings of the prompt text after the image (the
            user's question plus any template suffix), or None.
        generator: seeded ``torch.Generator`` (CPU) for methods that draw random numbers.
        options: the method's typed options (its registered :class:`MethodOptions` dataclass);
            None = the method's defaults, a dict = keyword options (both parsed by
            :meth:`Method.__call__`, with errors for unknown or ignored options).
        llm_attention: in-LLM methods: ``(N,)`` head-averaged attention from the last prompt
            token to each visual token at language-model layer K-1.
        llm_hidden: ``(N, d_l)`` layer K-1 output of the visual tokens, final-normed.
        llm_keys: ``(N, H_kv * d_h)`` post-RoPE keys of the visual tokens at layer K-1.
        llm_query_hidden / llm_query_keys: the same for the text tokens after the image ``(T, .)``.
        fidelity: ``"improved"`` or ``"reference"`` (the reference code's semantics; ``docs/fidelity.md``).
        cls_feature: ``(d_v,)`` the vision [CLS] hidden state at the layer the model reads, filled with
            ``cls_attention`` where the tower has one (VisionZip's reference keeps it), or None.
        llm_image_start: position of the image's first token in the unpadded prompt (in-LLM methods),
            or None (DART's reference fidelity then uses the reference's LLaVA-1.5 value, 35).
        group: index of the crop this context holds when the reference crop handling selects an
            image crop by crop (``adapters/groups.py::select_frames``), else None.

    In-LLM methods prune in one or more stages (``InLLMStages`` in ``methods/options.py``): the method
    is called once per stage with the ``N`` visual tokens still present (all of them at stage 0) and
    the state of layer ``K_s - 1``; the fields above describe those ``N`` tokens. Optional fields,
    filled only when the options' ``llm_fields`` name them (``adapters/in_llm.py``):

    Attributes:
        llm_stage: the stage index s (0-based) of an in-LLM call, else None.
        llm_prune_layer: ``K_s``, the first decoder layer that sees only the kept tokens.
        llm_next_attention: ``(N,)`` head-averaged attention from the last prompt token to each visual
            token at layer ``K_s`` itself, computed on every current token before pruning (PyramidDrop).
        llm_text_attention: ``(T, N)`` head-averaged attention from each text token after the image
            (rows of ``llm_query_hidden``) to each visual token at layer ``K_s - 1`` (SparseVLM).
        llm_residual: ``(N, d_l)`` layer ``K_s - 1`` output of the visual tokens as layer ``K_s`` reads
            it (not normed, model dtype); a method that merges returns ``Selection.tokens`` in this space.
        llm_image_embeds: ``(N_0, d_l)`` language-model input embeddings of all the image's visual tokens
            (stage 0's N); with ``instruction`` (the text after the image, same layer) for methods that
            rank text tokens at the input (SparseVLM's raters).
    """

    projected: Tensor
    features: Tensor | None = None
    projector: Callable[[Tensor], Tensor] | None = None
    grid: tuple[int, int] | None = None
    cls_attention: Tensor | None = None
    keys: Tensor | None = None
    instruction: Tensor | None = None
    generator: torch.Generator | None = None
    options: MethodOptions | dict | None = None
    llm_attention: Tensor | None = None
    llm_hidden: Tensor | None = None
    llm_keys: Tensor | None = None
    llm_query_hidden: Tensor | None = None
    llm_query_keys: Tensor | None = None
    fidelity: Fidelity = "improved"
    cls_feature: Tensor | None = None
    llm_image_start: int | None = None
    group: int | None = None
    llm_stage: int | None = None
    llm_prune_layer: int | None = None
    llm_next_attention: Tensor | None = None
    llm_text_attention: Tensor | None = None
    llm_residual: Tensor | None = None
    llm_image_embeds: Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.projected.shape[0])

    def require(self, *names: str, method: str) -> None:
        """Raise a clear error if a field the method needs was not provided by the adapter."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise ValueError(
                f"method {method!r} needs {', '.join(missing)}, which this model's adapter did not provide"
            )

    def checked(self, *names: str, method: str) -> tuple[Tensor, ...]:
        """The per-token fields ``names`` (e.g. ``cls_attention`` ``(N,)``, ``features`` ``(N, d_v)``),
        after checking that each was provided, has one row per visual token and is finite."""
        self.require(*names, method=method)
        n = self.num_tokens
        out = []
        for name in names:
            value = getattr(self, name)
            if value.shape[0] != n:
                raise ValueError(f"{method}: {name} has {value.shape[0]} rows but there are {n} visual tokens")
            check_finite(name, value)
            out.append(value)
        return tuple(out)

    def subset(self, index: Tensor, **changes: Any) -> PruneContext:
        """This context restricted to the tokens ``index`` ``(n,)`` (one crop of an anyres image): every
        per-token field is sliced; ``changes`` replace other fields (e.g. the crop's ``grid``)."""
        per_token = {
            name: None if getattr(self, name) is None else getattr(self, name)[index]
            for name in ("projected", "features", "cls_attention", "keys")
        }
        return replace(self, **per_token, **changes)


@dataclass
class Selection:
    """What a method returns for one image.

    Attributes:
        indices: ``(k,)`` LongTensor, kept token indices into the N input tokens, sorted
            ascending (original order), unique.
        scores: ``(N,)`` float32 per-token scores the method ranked by (for reports and
            heatmaps), or None.
        tokens: ``(k', d_l)`` tokens to place in the image slot instead of
            ``projected[indices]`` (methods that merge, e.g. visionzip), or None. In-LLM methods:
            ``(k, d_l)`` hidden states (the ``llm_residual`` space) that replace those of the kept
            ``indices`` from layer ``K_s`` on (SparseVLM's recycled tokens), or None.
        timings: optional milliseconds of the method's phases (e.g. ``score``, ``select``).
        estimator: the sensitivity estimator that produced ``scores`` (methods that take one, e.g.
            ``"closed-form"``, ``"central"``, ``"central-fp16"`` under reference fidelity), or None.
    """

    indices: Tensor
    scores: Tensor | None = None
    tokens: Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)
    estimator: str | None = None


MethodFn = Callable[[PruneContext, int], Selection]


@dataclass(frozen=True)
class Method:
    """A registered pruning method and what the pipeline needs to know about it.

    Attributes:
        name: registry name (``zooprune.list_methods()``).
        fn: ``fn(ctx, k) -> Selection``.
        needs: the :class:`PruneContext` fields the adapter must fill (see ``NEEDS``).
        stage: ``"pre_llm"`` (prunes before language-model layer 0), ``"in_llm"``, or ``"pre_and_in_llm"``
            (prunes before the LLM, then again inside it: called with ``ctx.llm_stage`` None for the
            pre-LLM stage, with the final k; its in-LLM stages then start from the tokens it kept).
        summary: one line for ``--help`` and the support matrix.
        options: the method's typed options dataclass (``MethodOptions`` when it has none).
        prunes: False for the unpruned reference (``none``): every token is kept whatever the budget.
        merges_tokens: the method may return merged tokens (``Selection.tokens``) instead of a subset.
        takes_estimator: the method scores with a ZOO-Prune sensitivity estimator (its scores
            are sensitivities; its options name the estimator).
        reference: the authors' file and function ``fidelity="reference"`` reproduces ("" = none).
        reference_unsupported: why ``fidelity="reference"`` cannot run ("" = it can).
        reference_rounding: how the reference turns a ratio r into k: ``"floor"`` (int(r * N)) or
            ``"round"`` (Python's round(r * N), half to even).
        reference_crops: how the reference treats multi-crop images (see ``ReferenceCrops``).
        reference_options: option values the reference fidelity implies (e.g. zoo's
            ``estimator="central"``); a conflicting value raises.
        reference_per_step: in-LLM methods whose reference re-selects the kept tokens at every decoding
            step from that step's state, recomputing the whole sequence without a KV cache (FastV's
            reference): ``fidelity="reference"`` then generates that way (``adapters/in_llm.py``).
    """

    name: str
    fn: MethodFn
    needs: frozenset[str] = frozenset()
    stage: MethodStage = "pre_llm"
    summary: str = ""
    options: type[MethodOptions] = MethodOptions
    prunes: bool = True
    merges_tokens: bool = False
    takes_estimator: bool = False
    reference: str = ""
    reference_unsupported: str = ""
    reference_rounding: Literal["floor", "round"] = "floor"
    reference_crops: ReferenceCrops = "unsupported"
    reference_options: tuple[tuple[str, Any], ...] = ()
    reference_per_step: bool = False

    @property
    def supports_reference(self) -> bool:
        """Whether ``fidelity="reference"`` can run for this method."""
        return not self.reference_unsupported

    def check_fidelity(self, fidelity: str) -> None:
        """Raise ``ValueError`` for an unknown fidelity, or ``"reference"`` on a method that has none."""
        if fidelity not in FIDELITIES:
            raise ValueError(f"fidelity must be one of {', '.join(map(repr, FIDELITIES))}, got {fidelity!r}")
        if fidelity == "reference" and not self.supports_reference:
            raise ValueError(
                f"method {self.name!r} has no fidelity='reference': {self.reference_unsupported} "
                "(see docs/fidelity.md; fidelity='improved' runs this library's version)"
            )

    def reference_budget(self, keep: int | float, num_tokens: int) -> int:
        """k for ``num_tokens`` tokens as the reference code computes it (a count is taken as is)."""
        if isinstance(keep, float):
            k = round(keep * num_tokens) if self.reference_rounding == "round" else int(keep * num_tokens)
            return max(1, min(num_tokens, int(k)))
        return min(int(keep), num_tokens)

    def reference_parse_options(self, values: MethodOptions | dict | None) -> MethodOptions:
        """The options under ``fidelity="reference"``: ``reference_options`` filled in where not given;
        a given value that conflicts raises ``ValueError`` naming it."""
        required = dict(self.reference_options)
        given = values.to_dict() if isinstance(values, MethodOptions) else dict(values or {})
        for key, value in required.items():
            if given.get(key) is not None and given[key] != value:
                raise ValueError(
                    f"method {self.name!r} with fidelity='reference' uses {key}={value!r} (as {self.reference}); "
                    f"got {key}={given[key]!r}: use fidelity='improved' for it"
                )
        if isinstance(values, MethodOptions):
            return self.parse_options(values).updated(self.name, required) if required else self.parse_options(values)
        return self.parse_options({**required, **dict(values or {})})

    def bound(self, **ctx_fields: Any) -> Method:
        """This method with ``ctx_fields`` (e.g. ``fidelity``) set on every context it is called with
        (how the pipeline hands the fidelity to in-LLM hooks that build their own contexts)."""
        fn = self.fn

        def with_fields(ctx: PruneContext, k: int) -> Selection:
            return fn(replace(ctx, **ctx_fields), k)

        return replace(self, fn=with_fields)

    @property
    def in_llm(self) -> bool:
        """Whether the method prunes inside the language model (FastV-style), alone or after a pre-LLM stage."""
        return self.stage != "pre_llm"

    @property
    def pre_llm(self) -> bool:
        """Whether the method prunes before the language model (alone or before in-LLM stages)."""
        return self.stage != "in_llm"

    @property
    def needs_prompt(self) -> bool:
        """Whether the method reads the prompt (instruction embeddings)."""
        return "instruction" in self.needs

    def parse_options(self, values: MethodOptions | dict | None = None) -> MethodOptions:
        """This method's options from a dict of keyword options (clear errors), or checked as given."""
        if isinstance(values, MethodOptions):
            if type(values) is not self.options:
                raise TypeError(
                    f"method {self.name!r} takes {self.options.__name__}, got {type(values).__name__}"
                )
            return values
        return self.options.parse(self.name, values)

    def __call__(self, ctx: PruneContext, k: int) -> Selection:
        if not isinstance(ctx.options, self.options):
            ctx = replace(ctx, options=self.parse_options(ctx.options))
        return self.fn(ctx, k)


METHODS: Registry[Method] = Registry("pruning method")


def register_method(
    name: str,
    *,
    needs: tuple[str, ...] = (),
    stage: MethodStage = "pre_llm",
    summary: str = "",
    options: type[MethodOptions] = MethodOptions,
    prunes: bool = True,
    merges_tokens: bool = False,
    takes_estimator: bool = False,
    aliases: tuple[str, ...] = (),
    reference: str = "",
    reference_unsupported: str = "",
    reference_rounding: Literal["floor", "round"] = "floor",
    reference_crops: ReferenceCrops = "unsupported",
    reference_options: tuple[tuple[str, Any], ...] = (),
    reference_per_step: bool = False,
) -> Callable[[MethodFn], MethodFn]:
    """Register ``fn(ctx, k) -> Selection`` under ``name`` with its metadata; returns ``fn`` unchanged."""
    unknown = set(needs) - NEEDS
    if unknown:
        raise ValueError(f"unknown needs {sorted(unknown)}; choose from {sorted(NEEDS)}")

    def deco(fn: MethodFn) -> MethodFn:
        unsupported = reference_unsupported
        if not reference and not unsupported:
            unsupported = "no reference implementation (a baseline defined by this library)"
        method = Method(
            name,
            fn,
            frozenset(needs),
            stage,
            summary,
            options,
            prunes,
            merges_tokens,
            takes_estimator,
            reference,
            unsupported,
            reference_rounding,
            reference_crops,
            reference_options,
            reference_per_step,
        )
        METHODS.add(name, method, aliases)
        return fn

    return deco


def get_method(name: str) -> Method:
    return METHODS.get(name)
