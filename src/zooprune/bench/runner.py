"""Measure the unpruned model and each method x budget side by side through :class:`PrunedVLM`.

One *case* is a method at a budget (with a sensitivity estimator for the zoo methods). Every
case runs ``warmup`` untimed generations, then ``repeats`` timed ones on the same image and
prompt, in interleaved rounds; every phase is reported as the median over repeats. Phases come from the pipeline's own
reports (``PrunedVLM.generate``): ``encode`` (vision tower + projector), ``score`` / ``select``
(the method), ``prefill`` (``model.generate`` start to first logits: time to first token of the
language model) and ``decode``; ``e2e`` is the wall clock of ``PrunedVLM.prepare`` (processor,
encode, prune, splice) plus ``generate_pruned`` (what ``PrunedVLM.generate`` runs, minus
detokenising) and ``ttft`` = ``e2e - decode``. ``lm_prefill`` times, after each generation,
one forward of the decoder stack alone (``model.model.language_model``, no embedding, no
lm_head, no ``generate`` set-up) on the same spliced inputs: the language-model prefill that
the FLOPs formula counts; for in-LLM methods (FastV, DART, ...) the same forward runs with the
method's hooks on a fresh copy of the batch's plan, so it covers every layer before and after the
pruning layer and the selection between them. The same forward records each decoder layer's ms
(``lm_layers``), from which reduced-depth models are extrapolated to full depth
(:func:`zooprune.bench.report.build_rows`). On CUDA every timed block is synchronised.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..config import Keep
from ..methods import get_method
from ..methods.estimators import get_estimator, projector_kernel
from ..pipeline import PreparedInputs
from ..vlm import PrunedVLM, generate_pruned
from .memory import PeakRSS


def takes_estimator(method: str) -> bool:
    """Whether ``method`` scores with a sensitivity estimator (one bench case per ``--estimators``)."""
    return get_method(method).takes_estimator


PHASES = ("encode", "score", "select", "prefill", "lm_prefill", "decode", "ttft", "e2e")


@dataclass(frozen=True)
class Case:
    """One configuration: ``method`` at budget ``keep`` (``estimator`` for the zoo methods)."""

    method: str
    keep: Keep
    estimator: str | None = None
    num_directions: int | None = None

    @property
    def label(self) -> str:
        if not get_method(self.method).prunes:
            return self.method
        name = self.method if self.estimator is None else f"{self.method}/{self.estimator}"
        if self.num_directions is not None and self.estimator in ("central", "jvp"):
            name += f"(m={self.num_directions})"
        return f"{name}@{self.keep}"

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.estimator is not None:
            opts["estimator"] = self.estimator
        if self.num_directions is not None and self.estimator is not None and get_estimator(self.estimator).uses_directions:
            opts["num_directions"] = self.num_directions
        return opts


def make_cases(
    methods: list[str], keeps: list[Keep], estimators: list[str], num_directions: int | None = None
) -> list[Case]:
    """The unpruned baseline first, then every method x budget (x estimator for zoo methods)."""
    cases = [Case("none", 1.0)]
    for method in methods:
        if not get_method(method).prunes:
            continue
        for keep in keeps:
            if takes_estimator(method):
                cases += [Case(method, keep, est, num_directions) for est in estimators]
            else:
                cases.append(Case(method, keep))
    return cases


@dataclass
class CaseResult:
    """Samples (ms) of one case, per phase, and what the language model saw."""

    case: Case
    samples: dict[str, list[float]] = field(default_factory=dict)
    peak_rss: list[int] = field(default_factory=list)
    visual_tokens: int = 0
    kept_tokens: int = 0
    prune_layer: int = 0  # language-model layer the visual tokens are dropped before (0: pre-LLM)
    equivalent_tokens: float = 0.0  # visual tokens averaged over the language-model layers
    layer_samples: list[list[float]] = field(default_factory=list)  # per run: ms of each decoder layer
    stages: list[tuple[int, int]] = field(default_factory=list)  # in-LLM (layer, visual tokens) per stage

    def median(self, phase: str) -> float:
        values = self.samples.get(phase, [])
        return statistics.median(values) if values else 0.0

    def layer_medians(self) -> list[float]:
        """Median ms of each decoder layer over the runs."""
        runs = [r for r in self.layer_samples if r]
        return [statistics.median(col) for col in zip(*runs)] if runs else []


def bench_image(size: int, seed: int = 0) -> Image.Image:
    """A seeded random RGB image of ``size`` x ``size`` pixels."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def bench_prompt(words: int) -> str:
    """A prompt of ``words`` whitespace-separated words (every word is one token of the offline
    tokenizer; a stand-in for LLaVA's system prompt + question, about 40-60 tokens)."""
    pool = "describe this picture what is in the image how many red circle are there on the left".split()
    return " ".join(pool[i % len(pool)] for i in range(max(1, words)))


def time_kernel_build(vlm: PrunedVLM) -> float:
    """Milliseconds to build the closed-form estimator's K for this model's projector (once per model)."""
    projector = vlm.adapter.float32_projector()
    start = time.perf_counter()
    projector_kernel(projector)  # type: ignore[arg-type]
    return (time.perf_counter() - start) * 1e3


def run_once(
    vlm: PrunedVLM, case: Case, image: Image.Image, prompt: str, new_tokens: int, result: CaseResult
) -> float:
    """One generation of ``case``; its phases are appended to ``result``. Returns e2e ms."""
    vlm = vlm.using(method=case.method, keep=case.keep, **case.options())  # the caller's stays as it was
    gen = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}
    layer = prune_layer(vlm, case)
    with PeakRSS() as mem:
        synchronize(vlm)
        start = time.perf_counter()
        prepared = vlm.prepare([image], [prompt])
        replay = unused_copy(prepared.plan)  # in-LLM: a plan not yet run, for the decoder-stack timing
        generate_pruned(vlm.model, prepared, **gen)
        synchronize(vlm)
        e2e = (time.perf_counter() - start) * 1e3
    t, report = prepared.timings, prepared.reports[0]
    row = {phase: float(t.get(phase, 0.0)) for phase in ("encode", "prefill", "decode")}
    # the method's own phases (in-LLM methods select inside the prefill: counted in both)
    row.update({phase: float(report.timings.get(phase, 0.0)) for phase in ("score", "select")})
    row["e2e"] = e2e
    row["ttft"] = e2e - row["decode"]
    row["decode_per_token"] = row["decode"] / max(1, new_tokens - 1)
    row["lm_prefill"], layer_ms = time_lm_prefill(vlm, prepared, replay)
    for key, value in row.items():
        result.samples.setdefault(key, []).append(value)
    result.layer_samples.append(layer_ms)
    result.peak_rss.append(mem.peak_delta)
    result.visual_tokens, result.kept_tokens = report.tokens_before, report.tokens_after
    result.equivalent_tokens = float(report.equivalent_tokens if report.equivalent_tokens is not None else report.tokens_after)
    result.prune_layer = layer
    result.stages = list(report.stages)
    return e2e


def unused_copy(obj: Any) -> Any:
    """A copy of a dataclass (an in-LLM plan before its run) whose lists, dicts and reports are its
    own, so running it changes nothing the original reports (None stays None)."""
    if obj is None:
        return None
    fresh = copy.copy(obj)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name == "reports":
            setattr(fresh, f.name, [unused_copy(r) for r in value])
        elif isinstance(value, (list, dict)):
            setattr(fresh, f.name, copy.copy(value))
    return fresh


def synchronize(vlm: PrunedVLM) -> None:
    """Wait for queued CUDA work on the model's device (a no-op on CPU)."""
    device = next(vlm.model.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_cases(
    vlm: PrunedVLM,
    cases: list[Case],
    image: Image.Image,
    prompt: str,
    new_tokens: int,
    repeats: int,
    warmup: int,
    on_sample: Callable[[str], None] | None = None,
) -> list[CaseResult]:
    """Time every case: ``warmup`` untimed rounds, then ``repeats`` timed rounds.

    Rounds are interleaved (each round runs every case once), so a slow drift of the machine
    (other processes, clocks) hits the unpruned baseline and the pruned cases alike.
    """
    results = [CaseResult(case) for case in cases]
    for r in range(warmup + repeats):
        for result in results:
            sink = CaseResult(result.case) if r < warmup else result
            e2e = run_once(vlm, result.case, image, prompt, new_tokens, sink)
            if on_sample is not None:
                tag = "warm-up" if r < warmup else f"run {r - warmup + 1}/{repeats}"
                on_sample(f"{result.case.label}: {tag} e2e {e2e:.0f} ms")
    return results


@torch.no_grad()
def time_lm_prefill(vlm: PrunedVLM, prepared: PreparedInputs, plan: Any = None) -> tuple[float, list[float]]:
    """One decoder-stack forward (with a KV cache, as prefill) on ``prepared``'s inputs: total ms and
    each decoder layer's ms. ``plan`` (an unused copy of ``prepared.plan``) prunes in-LLM during it,
    so an in-LLM method's forward covers the layers before and after its pruning layer."""
    language_model = vlm.adapter.language_model()
    kwargs = prepared.model_kwargs()
    stamps: list[float] = []

    def stamp(*_args: Any, **_kwargs: Any) -> None:
        synchronize(vlm)
        stamps.append(time.perf_counter())

    layers = list(language_model.layers)
    handles = [layer.register_forward_pre_hook(stamp) for layer in layers]
    handles += [layer.register_forward_hook(stamp) for layer in layers]
    try:
        synchronize(vlm)
        start = time.perf_counter()
        with plan.active() if plan is not None else contextlib.nullcontext():
            language_model(**kwargs, use_cache=True)
        synchronize(vlm)
        total = (time.perf_counter() - start) * 1e3
    finally:
        for h in handles:
            h.remove()
    per_layer = [(b - a) * 1e3 for a, b in zip(stamps[0::2], stamps[1::2])]
    return total, per_layer


def prune_layer(vlm: PrunedVLM, case: Case) -> int:
    """Decoder layer from which the kept tokens alone go on: 0 for pre-LLM methods, K for in-LLM (the
    last stage's for multi-stage methods; ``CaseResult.stages`` holds every stage)."""
    if not get_method(case.method).in_llm:
        return 0
    return max(vlm.config.options.stage_layers(len(vlm.adapter.language_model().layers)))


def text_tokens(vlm: PrunedVLM, image: Image.Image, prompt: str) -> tuple[int, int]:
    """(prompt length in tokens with the image placeholders, visual tokens per image)."""
    inputs = vlm.encode_inputs([image], [prompt])
    ids = inputs["input_ids"][0]
    visual = int((ids == vlm.adapter.image_token_id).sum())
    return int(ids.shape[0]), visual


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads if given; returns the count in use."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
