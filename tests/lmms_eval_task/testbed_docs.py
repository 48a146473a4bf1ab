"""doc_to_* functions of the ``zooprune_testbed`` lmms-eval task (one row of docs.jsonl = one doc)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image


def doc_to_visual(doc: dict[str, Any]) -> list[Image.Image]:
    """The doc's image (path relative to the working directory), as RGB."""
    with Image.open(Path(doc["image"])) as image:
        return [image.convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """The question as the testbed asks it."""
    return str(doc["question"])


def doc_to_choice(doc: dict[str, Any]) -> list[str]:
    """Two answers: the right one first, then a wrong one (``no`` or ``yes``)."""
    wrong = "yes" if doc["answer"] == "no" else "no"
    return [str(doc["answer"]), wrong]


def doc_to_target_index(doc: dict[str, Any]) -> int:
    """Index of the right answer in :func:`doc_to_choice`."""
    return 0
