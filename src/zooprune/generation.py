"""Run stock ``model.generate`` on pruned inputs and time prefill vs decode."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn
from transformers import LogitsProcessor, LogitsProcessorList

from .pipeline import PreparedInputs


class StepClock(LogitsProcessor):
    """A no-op logits processor that records when each generation step's logits arrive."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.stamps: list[float] = []

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        self.stamps.append(time.perf_counter())
        return scores

    def split(self, end: float) -> dict[str, float]:
        """``prefill`` = start to first logits (time to first token); ``decode`` = the rest (ms)."""
        if not self.stamps:
            return {"prefill": (end - self.start) * 1e3, "decode": 0.0}
        return {"prefill": (self.stamps[0] - self.start) * 1e3, "decode": (end - self.stamps[0]) * 1e3}


DEFAULT_GENERATION = {"max_new_tokens": 32, "do_sample": False}


def generate_pruned(model: nn.Module, prepared: PreparedInputs, **generation_kwargs: Any) -> Tensor:
    """``model.generate`` (stock) on the pruned ``inputs_embeds``; returns only the new tokens ``(B, T)``.

    Fills ``prepared.timings`` (and each report's timings) with ``prefill`` and ``decode`` ms.
    """
    kwargs = {**DEFAULT_GENERATION, **generation_kwargs}
    clock = StepClock()
    processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
    processors.append(clock)
    with torch.no_grad():
        clock.start = time.perf_counter()
        with prepared.active():
            new_tokens = model.generate(**prepared.model_kwargs(), logits_processor=processors, **kwargs)
        end = time.perf_counter()
    if not isinstance(new_tokens, Tensor):  # return_dict_in_generate=True
        new_tokens = new_tokens.sequences
    new_tokens = prepared.new_tokens(new_tokens)
    split = clock.split(end)
    prepared.timings.update(split)
    for report in prepared.reports:
        report.timings.update(split)
    return new_tokens
