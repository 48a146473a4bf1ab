"""The method contract: what a pruning method reads, what it returns, how it is registered.

A method is a pure tensor function ``fn(ctx: PruneContext, k: int) -> Selection`` for one
image (or one crop). It never imports transformers: model-family knowledge lives in
``zooprune.adapters``, which fill a :class:`PruneContext` with exactly what the method
declares in ``needs`` and splice the result back into the language model's inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor

from ..registry import Registry
from .options import MethodOptions

#: What a method can ask the adapter for (besides ``projected``, which is always there).
NEEDS = frozenset({"features", "projector", "grid", "cls_attention", "keys", "instruction", "llm_layer"})


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


@dataclass
class Selection:
    """What a method returns for one image.

    Attributes:
        indices: ``(k,)`` LongTensor, kept token indices into the N input tokens, sorted
            ascending (original order), unique.
        scores: ``(N,)`` float32 per-token scores the method ranked by (for reports and
            heatmaps), or None.
        tokens: ``(k', d_l)`` tokens to place in the image slot instead of
            ``projected[indices]`` (methods that merge, e.g. visionzip), or None.
        timings: optional milliseconds of the method's phases (e.g. ``score``, ``select``).
    """

    indices: Tensor
    scores: Tensor | None = None
    tokens: Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)


MethodFn = Callable[[PruneContext, int], Selection]


@dataclass(frozen=True)
class Method:
    """A registered pruning method and what the pipeline needs to know about it.

    Attributes:
        name: registry name (``zooprune.list_methods()``).
        fn: ``fn(ctx, k) -> Selection``.
        needs: the :class:`PruneContext` fields the adapter must fill (see ``NEEDS``).
        stage: ``"pre_llm"`` (prunes before language-model layer 0) or ``"in_llm"``.
        summary: one line for ``--help`` and the support matrix.
        options: the method's typed options dataclass (``MethodOptions`` when it has none).
        prunes: False for the unpruned reference (``none``): every token is kept whatever the budget.
        merges_tokens: the method may return merged tokens (``Selection.tokens``) instead of a subset.
        takes_estimator: the method scores with a ZOO-Prune sensitivity estimator (its scores
            are sensitivities; its options name the estimator).
    """

    name: str
    fn: MethodFn
    needs: frozenset[str] = frozenset()
    stage: Literal["pre_llm", "in_llm"] = "pre_llm"
    summary: str = ""
    options: type[MethodOptions] = MethodOptions
    prunes: bool = True
    merges_tokens: bool = False
    takes_estimator: bool = False

    @property
    def in_llm(self) -> bool:
        """Whether the method prunes inside the language model (FastV-style)."""
        return self.stage == "in_llm"

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
    stage: Literal["pre_llm", "in_llm"] = "pre_llm",
    summary: str = "",
    options: type[MethodOptions] = MethodOptions,
    prunes: bool = True,
    merges_tokens: bool = False,
    takes_estimator: bool = False,
    aliases: tuple[str, ...] = (),
) -> Callable[[MethodFn], MethodFn]:
    """Register ``fn(ctx, k) -> Selection`` under ``name`` with its metadata; returns ``fn`` unchanged."""
    unknown = set(needs) - NEEDS
    if unknown:
        raise ValueError(f"unknown needs {sorted(unknown)}; choose from {sorted(NEEDS)}")

    def deco(fn: MethodFn) -> MethodFn:
        method = Method(name, fn, frozenset(needs), stage, summary, options, prunes, merges_tokens, takes_estimator)
        METHODS.add(name, method, aliases)
        return fn

    return deco


def get_method(name: str) -> Method:
    return METHODS.get(name)
