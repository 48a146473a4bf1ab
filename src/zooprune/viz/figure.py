"""One matplotlib figure comparing methods on one image: overlays, answers, token counts, heatmap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from ..report import PruneReport
from .compare import MethodRun
from .layout import token_layout
from .overlay import heatmap, overlay

#: Width of one panel in inches, and panels per row.
PANEL_INCHES = 3.2
MAX_COLUMNS = 4


def comparison_figure(
    image: Image.Image,
    runs: list[MethodRun],
    processor: Any,
    sensitivity: PruneReport | None = None,
    prompt: str = "",
    dpi: int = 100,
) -> Any:
    """A grid of panels (up to four a row): input image, one overlay per method (answer, kept/total,
    timings in the caption), then the zoo sensitivity heatmap when ``sensitivity`` is given.
    Multi-view layouts (anyres base | high-res, tiles | thumbnail) are named in the titles and
    rows are as tall as the tallest picture needs. Returns the figure."""
    from ..plots import pyplot

    plt = pyplot()
    panels: list[tuple[Image.Image, str, str]] = [(image.convert("RGB"), "input", wrap(prompt))]
    for run in runs:
        if run.report is None:
            continue  # a method that could not run on this model: reported by the caller
        caption = f"{wrap(repr(run.answer))}\n{run.summary()}"
        title = f"{run.method} (keep {run.report.keep}){view_names(image, run.report, processor)}"
        panels.append((overlay(image, run.report, processor), title, caption))
    if sensitivity is not None:
        title = f"zoo sensitivity{view_names(image, sensitivity, processor)}"
        panels.append((heatmap(image, sensitivity, processor), title, "brighter = more sensitive"))
    cols = min(MAX_COLUMNS, len(panels))
    rows = -(-len(panels) // cols)
    aspect = max(picture.height / picture.width for picture, _, _ in panels)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(PANEL_INCHES * cols, (PANEL_INCHES * aspect + 1.0) * rows),
        dpi=dpi,
        squeeze=False,
    )
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (picture, title, caption) in zip(axes.flat, panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(caption, fontsize=7.5)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def view_names(image: Image.Image, report: PruneReport, processor: Any) -> str:
    """``"\nbase | high-res"`` for multi-view layouts, ``""`` for one view."""
    views = token_layout(image.size, report, processor)
    return "" if len(views) == 1 else "\n" + " | ".join(v.name for v in views)


def wrap(text: str, width: int = 38) -> str:
    """Break ``text`` into lines of at most ``width`` characters (at spaces when possible)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:3]) if text else ""


def save_figure(fig: Any, path: str | Path) -> list[Path]:
    """Save ``fig`` at ``path`` (its suffix, PNG by default) and close it; returns the written paths."""
    from ..plots import save

    out = Path(path)
    return save(fig, [out if out.suffix else out.with_suffix(".png")])
