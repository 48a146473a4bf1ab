"""Answer matching and accuracy tables."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

WORD = re.compile(r"[a-z0-9]+")


def normalize_answer(text: str) -> str:
    """First word, lower-cased, punctuation stripped: "Yes." -> "yes", "B) red" -> "b"."""
    words = WORD.findall(text.lower())
    return words[0] if words else ""


def is_correct(prediction: str, answer: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(answer)


def accuracy_by_family(rows: Iterable[tuple[str, bool]]) -> dict[str, float]:
    """``(family, correct)`` pairs -> accuracy per family plus ``"overall"`` (micro average)."""
    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for family, correct in rows:
        for key in (family, "overall"):
            hits[key][0] += int(correct)
            hits[key][1] += 1
    return {k: v[0] / v[1] for k, v in sorted(hits.items())}
