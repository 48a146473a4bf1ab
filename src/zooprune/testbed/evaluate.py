"""Fast teacher-forced held-out accuracy for training (first answer token = greedy answer).

``VAL_SEED`` is the validation split used during training; it differs from ``EVAL_SEED`` and
from every training seed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, LlavaForConditionalGeneration, PreTrainedTokenizerFast

from .batches import pixels
from .data import make_sample, make_samples
from .packing import Standardize, TokenIds, lm_forward, pack, project, vision_features
from .questions_v2 import make_sample_v2
from .scenes import GRID
from .trainkit import token_ids
from .variant import EVAL_SEEDS, VARIANTS

VAL_SEED = 999


@dataclass
class ValItem:
    """One held-out question: pixels [3, 224, 224], question ids, answer text, family."""

    pixel_values: torch.Tensor
    question: str
    answer: str
    family: str


def held_out_family(variant: str, family: str, seed: int | None, n: int) -> list:
    """The samples of ``family`` among ``n`` held-out scenes of testbed ``variant`` ("v1" / "v2";
    ``seed`` defaults to the variant's eval seed). A scene that does not fit the family got another
    question and is left out, so up to ``n`` come back (``data.Sample`` / ``questions_v2.SampleV2``)."""
    if variant not in EVAL_SEEDS:
        raise ValueError(f"unknown testbed variant {variant!r}; choose v1 or v2")
    draw = make_sample if variant == "v1" else make_sample_v2
    samples = [draw(EVAL_SEEDS[variant] if seed is None else seed, i, family) for i in range(n)]
    return [s for s in samples if s.family == family]


def val_samples(seed: int, n: int) -> list[ValItem]:
    """``n`` family-balanced held-out questions of split ``seed``."""
    return [ValItem(pixels(s.image), s.question, s.answer, s.family) for s in make_samples(seed, n)]


@torch.no_grad()
def validation_accuracy(
    model: LlavaForConditionalGeneration,
    std: Standardize,
    ids: TokenIds,
    tok: PreTrainedTokenizerFast,
    items: list[ValItem],
    keep_fraction: float = 1.0,
    seed: int = 0,
    batch: int = 32,
) -> dict[str, float]:
    """Accuracy per family and ``overall``; ``keep_fraction`` < 1 keeps random visual tokens."""
    model.eval()
    n_tok = GRID * GRID
    k = round(keep_fraction * n_tok)
    rng = np.random.default_rng(seed)
    hits: dict[str, list[int]] = {}
    for s in range(0, len(items), batch):
        chunk = items[s : s + batch]
        rows = []
        for it in chunk:
            keep = (
                sorted(rng.choice(n_tok, size=k, replace=False).tolist()) if k < n_tok else list(range(n_tok))
            )
            q = tok(it.question, add_special_tokens=False)["input_ids"]
            rows.append((keep, [{"q": q, "a": tok.convert_tokens_to_ids(it.answer)}]))
        p = pack(ids, rows)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats = vision_features(model, torch.stack([it.pixel_values for it in chunk]))
            img = project(model, std, feats.float())
            la, _, _ = lm_forward(model, img, p)
        pred = la.argmax(-1)
        for it, ok in zip(chunk, (pred == p.answers).tolist()):
            hits.setdefault(it.family, []).append(int(ok))
    out = {f: float(np.mean(v)) for f, v in sorted(hits.items())}
    out["overall"] = float(np.mean([x for v in hits.values() for x in v]))
    model.train()
    return out


@torch.no_grad()
def first_tokens(
    model: LlavaForConditionalGeneration, tok: PreTrainedTokenizerFast, items: list[ValItem], batch: int = 32
) -> list[str]:
    """Greedy first answer token of each item with all 196 visual tokens (an exported model:
    its standardisation is folded into the projector). For the diagnosis probes in ``benchmarks/``."""
    ids = token_ids(tok)
    std = Standardize(model.config.vision_config.hidden_size)
    preds: list[str] = []
    for s in range(0, len(items), batch):
        chunk = items[s : s + batch]
        rows = [
            (list(range(GRID * GRID)), [{"q": tok(it.question, add_special_tokens=False)["input_ids"], "a": 0}])
            for it in chunk
        ]
        p = pack(ids, rows)
        feats = vision_features(model, torch.stack([it.pixel_values for it in chunk]))
        la, _, _ = lm_forward(model, project(model, std, feats), p)
        preds += tok.convert_ids_to_tokens(la.argmax(-1).tolist())
    return preds


def probe_parser(description: str) -> argparse.ArgumentParser:
    """The options every held-out diagnosis probe in ``benchmarks/`` takes (model, variant, split, n, out)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default="models/testbed-llava-v2")
    ap.add_argument("--variant", choices=VARIANTS, default="v2")
    ap.add_argument("--seed", type=int, default=None, help="held-out split (default: the eval seed)")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--out", default=None, help="write the JSON result here")
    return ap


def load_for_probes(model_dir: str) -> tuple[LlavaForConditionalGeneration, Any]:
    """A saved testbed model for :func:`first_tokens`: float32, eager attention, one torch thread."""
    torch.set_num_threads(1)
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    model.set_attn_implementation("eager")
    return model, AutoTokenizer.from_pretrained(model_dir)
