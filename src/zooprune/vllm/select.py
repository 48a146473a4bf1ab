"""Per-image selection inside vLLM: the same pure method functions and checks as ``zooprune.load``.

For each image: a :class:`~zooprune.methods.PruneContext` filled as the HF pipeline fills it
(``zooprune.pipeline.prepare``: float32 projector, grid, [CLS] attention, question embeddings,
``torch.Generator().manual_seed(seed)``), then :func:`zooprune.pipeline.select_image` (budget,
keep-all, checks) and the kept rows (or the method's merged tokens). The count must equal the
placeholders the processor reserved (:mod:`zooprune.vllm.budget`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor

from ..adapters.base import ImageTokens
from ..config import PruneConfig
from ..methods import Selection
from ..pipeline import image_context, select_image


def square_grid(n: int) -> tuple[int, int] | None:
    """``(side, side)`` for a square number of tokens, else None (as the HF LLaVA adapter)."""
    side = math.isqrt(n)
    return (side, side) if side * side == n else None


def prune_image(
    config: PruneConfig,
    image: ImageTokens,
    expected: int,
    projector: Callable[[], Callable[[Tensor], Tensor]],
    instruction: Callable[[], Tensor] | None,
) -> tuple[Tensor, Selection]:
    """Kept tokens ``(k, d_l)`` (dtype of ``image.projected``) and the selection of one image.

    Args:
        config: the request's configuration (pre-LLM method).
        image: the image's projected tokens ``(N, d_l)``, features ``(N, d_v)``, grid, [CLS]
            attention ``(N,)`` and keys ``(N, H, d_h)`` (what the method needs).
        expected: the placeholders the processor reserved for the image (``zooprune.vllm.budget``).
        projector: returns the float32 projector (built on first call; only called if needed).
        instruction: returns the ``(T, d_l)`` question embeddings (only called if needed).
    """
    method = config.spec
    n = int(image.projected.shape[0])
    ctx = image_context(
        config,
        image,
        projector() if "projector" in method.needs else None,
        instruction() if method.needs_prompt and instruction is not None else None,
    )
    sel = select_image(method, config, image, ctx)
    tokens = sel.tokens.to(image.projected.dtype) if sel.tokens is not None else image.projected[sel.indices]
    if tokens.shape[0] != expected:
        raise RuntimeError(
            f"zooprune: method {config.method!r} returned {tokens.shape[0]} tokens for an image of {n} at "
            f"keep={config.keep!r}, but the processor reserved {expected} placeholders"
        )
    return tokens, sel
