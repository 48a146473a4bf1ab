"""Embedded testbed: procedural VQA scenes and a small LLaVA trained on them."""

from __future__ import annotations

from .data import EVAL_SEED, TRAIN_SEED_BASE, Sample, make_sample, make_samples, write_split
from .questions import FAMILIES, answer_from_scene, question_text

__all__ = [
    "EVAL_SEED",
    "FAMILIES",
    "TRAIN_SEED_BASE",
    "Sample",
    "answer_from_scene",
    "make_sample",
    "make_samples",
    "question_text",
    "write_split",
]
