"""Token layouts for drawing: which image region each of an image's visual tokens covers.

The geometry belongs to the model family that produced the tokens: each adapter's
``token_layout`` classmethod (``zooprune/adapters/<family>.py``) builds the views, from the
helpers in :mod:`zooprune.geometry`. This module picks the adapter from ``report.model_type``.

* one crop (LLaVA-1.5, Gemma 3): one ``image`` view, the processor's resize + center crop cut
  into the report's ``rows x cols`` grid;
* Qwen2-VL / Qwen2.5-VL: one ``image`` view, the merged token grid over the whole image;
* LLaVA-NeXT / LLaVA-OneVision anyres: ``base`` and ``high-res`` views (newline tokens in none);
* InternVL tiles: ``tiles`` and ``thumbnail`` views.
"""

from __future__ import annotations

from typing import Any

from ..geometry import View
from ..report import PruneReport

__all__ = ["View", "token_layout"]


def token_layout(image_size: tuple[int, int], report: PruneReport, processor: Any) -> list[View]:
    """The views of ``report``'s tokens on an original image of ``(width, height)``.

    Args:
        image_size: ``(width, height)`` of the image given to the model.
        report: the image's report; its ``model_type`` chooses the family's layout.
        processor: the model's processor (or its image processor).
    """
    from ..adapters import adapter_class

    if image_size[0] <= 0 or image_size[1] <= 0:
        raise ValueError(f"image size must be positive, got {image_size}")
    if report.model_type is None:
        raise ValueError(
            f"the {report.method} report has no model_type: cannot tell which model family's layout "
            "places its tokens on the image (reports from zooprune carry it; for a hand-made report "
            "pass PruneReport(..., model_type=model.config.model_type))"
        )
    return adapter_class(report.model_type).token_layout(image_size, report, processor)
