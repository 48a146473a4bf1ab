"""Part (a) of the device check (``scripts/device-check.sh``): the tiny-family equivalence checks on
the device in its dtype: keep-all logits equal to the stock model's, and a ragged batch equal to
one-by-one calls (kept indices and generated tokens), for zoo, divprune and fastv where supported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from ..config import PruneConfig

SIZES = [(90, 60), (40, 70), (64, 64)]


def random_image(seed: int, size: tuple[int, int]) -> Any:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


@torch.no_grad()
def one_family(
    name: str, build: Callable[..., Any], device: torch.device, dtype: torch.dtype
) -> dict[str, Any]:
    from ..methods import METHODS
    from ..vlm import PrunedVLM, generate_pruned

    model, processor = build(seed=0)
    processor.tokenizer.padding_side = "left"
    model = model.to(device=device, dtype=dtype).eval()
    vlm = PrunedVLM(model, processor, PruneConfig("none", keep=1.0))
    result: dict[str, Any] = {"keep_all": {}, "batch": {}}
    start = time.perf_counter()
    inputs = vlm.encode_inputs([random_image(0, SIZES[0])], ["what is in the image ?"])
    inputs = {k: v.to(dtype) if torch.is_floating_point(v) else v for k, v in inputs.items()}
    stock = model(**inputs).logits.float()
    for method in ("none", "zoo"):
        prepared = vlm.using(method=method, keep=1.0).prepare(
            [random_image(0, SIZES[0])], ["what is in the image ?"]
        )
        logits = model(**prepared.model_kwargs()).logits.float()
        same_shape = logits.shape == stock.shape
        result["keep_all"][method] = {
            "equal": bool(same_shape and torch.equal(logits, stock)),
            "max_abs_diff": float((logits - stock).abs().max()) if same_shape else None,
        }
    images = [random_image(i, size) for i, size in enumerate(SIZES)]
    prompts = ["what is in the image ?", "how many ?", "describe this picture"]
    provides = vlm.adapter.provides
    for method in ("zoo", "divprune", "fastv"):
        spec = METHODS.get(method)
        if not spec.needs <= provides:
            result["batch"][method] = {"skipped": "not supported by this family"}
            continue
        configured = vlm.using(method=method, keep=0.5)
        batch = configured.prepare(images, prompts)
        together = generate_pruned(model, batch, max_new_tokens=5)
        kept_equal, tokens_equal = [], []
        for i in range(3):
            single = configured.prepare(images[i : i + 1], prompts[i : i + 1])
            alone = generate_pruned(model, single, max_new_tokens=5)[0]
            kept_equal.append(
                bool(torch.equal(single.reports[0].kept_indices, batch.reports[i].kept_indices))
            )
            tokens_equal.append(bool(torch.equal(together[i, : alone.numel()].cpu(), alone.cpu())))
        result["batch"][method] = {
            "equal": all(kept_equal) and all(tokens_equal),
            "kept_equal": kept_equal,
            "tokens_equal": tokens_equal,
            "tokens_before": [r.tokens_before for r in batch.reports],
        }
    result["ok"] = all(v.get("equal", True) for part in ("keep_all", "batch") for v in result[part].values())
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result
