"""Pieces both testbed training recipes use (v1: ``train.py``, v2: ``train_v2.py``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..hf_layout import to_llava_hf_layout
from .packing import Standardize, TokenIds


def token_ids(tok: Any) -> TokenIds:
    """The ids :func:`packing.pack` needs, read from the testbed tokenizer ``tok``."""
    c = tok.convert_tokens_to_ids
    return TokenIds(
        bos=tok.bos_token_id,
        eos=tok.eos_token_id,
        pad=tok.pad_token_id,
        image=c("<image>"),
        user=c("USER"),
        assistant=c("ASSISTANT"),
        colon=c(":"),
    )


def cosine(frac: float, warm: float = 0.03, floor: float = 0.05) -> float:
    """LR multiplier: linear warm-up then cosine decay to ``floor``."""
    if frac < warm:
        return frac / warm
    t = min(1.0, (frac - warm) / (1 - warm))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def ground_weight(frac: float, base: float) -> float:
    """Grounding-loss weight at fraction ``frac`` of the question stage: full until 40 %, linearly to 0 at 65 %."""
    if frac < 0.4:
        return base
    return base * max(0.0, 1 - (frac - 0.4) / 0.25)


def export_model(model: Any, std: Standardize, processor: Any, out: Path) -> None:
    """Fold ``std`` into the projector's first layer (then reset it) and save model + processor (bf16)."""
    lin = model.model.multi_modal_projector.linear_1
    with torch.no_grad():
        w = lin.weight / std.std[None, :]
        lin.bias -= w @ std.mean
        lin.weight.copy_(w)
    std.mean.zero_()
    std.std.fill_(1.0)
    model.set_attn_implementation("sdpa")
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out)
    to_llava_hf_layout(out)  # vision_tower.vision_model.*: loads in transformers and stock vLLM
    processor.save_pretrained(out)
    print(f"saved {out}", flush=True)
