"""Which testbed (v1 or v2) a saved model was trained on, read from its word-level tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

from .data import EVAL_SEED
from .questions import vocabulary
from .questions_v2 import EVAL_SEED_V2, vocabulary_v2

VARIANTS: tuple[str, ...] = ("v1", "v2")
#: The held-out evaluation split of each testbed.
EVAL_SEEDS: dict[str, int] = {"v1": EVAL_SEED, "v2": EVAL_SEED_V2}


def model_testbed_variant(model: str | Path) -> str | None:
    """``"v2"`` if the model folder's tokenizer holds every v2 word, ``"v1"`` if it holds every v1
    word (and not all of v2's), None for anything else (a hub id, a real VLM, no tokenizer.json).

    The v2 vocabulary contains v1's, so a v2 model would also read v1 questions without an error:
    callers that generate testbed questions use this to generate the ones the model was trained on.
    """
    path = Path(model) / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        tok = json.loads(path.read_text())
        vocab = set(tok["model"]["vocab"]) if tok["model"]["type"] == "WordLevel" else set()
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
    if vocab >= set(vocabulary_v2()):
        return "v2"
    if vocab >= set(vocabulary()):
        return "v1"
    return None


__all__ = ["EVAL_SEEDS", "VARIANTS", "model_testbed_variant"]
