"""See what a pruning method kept: token overlays, sensitivity heatmaps, comparison figures, plots.

Python API::

    result = vlm.generate([image], [prompt])
    picture = zooprune.viz.overlay(image, result.reports[0], vlm.processor)   # PIL image

``import zooprune.viz`` loads numpy and PIL only; matplotlib is imported by the functions that draw.
"""

from __future__ import annotations

from ..geometry import CropGeometry, View, crop_geometry
from .compare import MethodRun, run_methods, sensitivity_report
from .layout import token_layout
from .overlay import heatmap, kept_mask, overlay

__all__ = [
    "CropGeometry",
    "MethodRun",
    "View",
    "crop_geometry",
    "heatmap",
    "kept_mask",
    "overlay",
    "run_methods",
    "sensitivity_report",
    "token_layout",
]
