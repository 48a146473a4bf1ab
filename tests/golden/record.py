"""Record (or recompute) the golden kept indices and greedy texts of every supported (family, method).

For every tiny test family and every method the support matrix allows there, at two budgets, on
two fixed images: the kept indices of each image and the greedy text, through the public
``PrunedVLM`` API. ``tests/test_golden.py`` recomputes this and compares it with the committed
``tests/golden/golden.json``, so a refactor that changes any kept token or any answer fails.

Regenerate (only when a behaviour change is intended, and say so in the commit)::

    .venv/bin/python -m tests.golden.record
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

GOLDEN = Path(__file__).with_name("golden.json")
BUDGETS = (0.5, 3)  # a ratio and a small count
IMAGE_SIZES = ((90, 60), (64, 64))
PROMPT = "what is in the image ?"
#: extra option variants recorded on top of each method's defaults: (family, method, options)
VARIANTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("llava", "zoo", {"estimator": "central", "num_directions": 8, "step": 0.05}),
    ("llava", "zoo", {"estimator": "jvp", "num_directions": 8}),
    ("llava_next", "zoo", {"budget": "whole"}),
    ("llava", "fastv", {"layer": 1}),
)


def golden_image(seed: int, size: tuple[int, int]) -> Image.Image:
    """A deterministic noise image (width, height)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def cases() -> list[tuple[str, str, dict[str, Any]]]:
    """Every (family, method, options) to record: the support matrix plus ``VARIANTS``."""
    from zooprune.adapters import adapter_class, get_adapter  # noqa: F401
    from zooprune.methods import METHODS
    from zooprune.testing.tiny import BUILDERS

    out = []
    for family in sorted(BUILDERS):
        provides = adapter_class(family).provides
        for name, method in METHODS.items():
            if method.needs <= provides:
                out.append((family, name, {}))
    return out + list(VARIANTS)


def case_key(family: str, method: str, options: dict[str, Any], keep: Any) -> str:
    opts = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{family}|{method}|{opts}|{keep}"


def compute() -> dict[str, Any]:
    """The golden record: ``{case key: {"kept": [[...] per image], "texts": [...]}}``."""
    from zooprune.config import PruneConfig
    from zooprune.testing.tiny import BUILDERS
    from zooprune.vlm import PrunedVLM

    torch.manual_seed(0)
    images = [golden_image(i, size) for i, size in enumerate(IMAGE_SIZES)]
    record: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for family, method, options in cases():
        if family not in models:
            models[family] = BUILDERS[family](seed=0)
        model, processor = models[family]
        for keep in BUDGETS:
            opts = dict(options)
            budget = opts.pop("budget", "per-crop")  # a PruneConfig field since the reshape
            config = PruneConfig(method=method, keep=keep, seed=0, options=opts, budget=budget)
            vlm = PrunedVLM(model, processor, config)
            kept, texts = [], []
            for image in images:  # one prompt at a time (the recorded answers predate ragged in-LLM batches)
                out = vlm.generate(images=[image], prompts=[PROMPT], max_new_tokens=6)
                kept.append([r.kept_indices.tolist() for r in out.reports])
                texts.append(out.texts[0])
            record[case_key(family, method, options, keep)] = {"kept": kept, "texts": texts}
    return record


def main() -> None:
    torch.set_num_threads(1)
    record = compute()
    GOLDEN.write_text(json.dumps(record, indent=0, sort_keys=True) + "\n")
    print(f"wrote {len(record)} cases to {GOLDEN}")


if __name__ == "__main__":
    main()
