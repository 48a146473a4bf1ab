"""What the demo shows for one request, without gradio: overlay pictures and a results table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..viz import heatmap, overlay, run_methods, sensitivity_report
from ..viz.compare import MethodRun

if TYPE_CHECKING:
    from ..vlm import PrunedVLM

#: Overlays smaller than this (pixels, shorter side) are enlarged without smoothing for display.
DISPLAY_MIN_SIDE = 320


def enlarge(image: Image.Image, min_side: int = DISPLAY_MIN_SIDE) -> Image.Image:
    """``image`` scaled up by a whole factor (nearest neighbour) until its shorter side reaches ``min_side``."""
    factor = max(1, -(-min_side // min(image.size)))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def results_table(runs: list[MethodRun]) -> str:
    """A Markdown table: method, answer, kept/total tokens, pruning / prefill / decode ms."""
    lines = [
        "| method | answer | kept / total tokens | prune ms | prefill ms | decode ms |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for run in runs:
        if run.report is None:
            error = str(run.error).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {run.method} | not run: {error} | - | - | - | - |")
            continue
        r, t = run.report, run.timings
        answer = run.answer.replace("|", "\\|").replace("\n", " ") or "(empty)"
        prune = r.timings.get("score", 0.0) + r.timings.get("select", 0.0)
        lines.append(
            f"| {run.method} | {answer} | {r.tokens_after} / {r.tokens_before} | {prune:.1f} | "
            f"{t.get('prefill', 0.0):.1f} | {t.get('decode', 0.0):.1f} |"
        )
    return "\n".join(lines)


def compare(
    vlm: PrunedVLM,
    image: Image.Image,
    question: str,
    methods: list[str],
    keep: int,
    max_new_tokens: int = 16,
    with_heatmap: bool = True,
    estimator_options: Mapping[str, Any] | None = None,
) -> tuple[list[tuple[Image.Image, str]], str]:
    """Run ``methods`` at ``keep`` tokens: ``(gallery, table)`` with one captioned overlay per
    method (plus the zoo sensitivity heatmap) and the Markdown results table. ``vlm`` is left as
    it was; ``estimator_options`` go to the methods that take a sensitivity estimator only."""
    if image is None:
        raise ValueError("upload an image first")
    if not question or not question.strip():
        raise ValueError("type a question")
    if not methods:
        raise ValueError("pick at least one method")
    image = image.convert("RGB")
    runs = run_methods(
        vlm,
        image,
        question.strip(),
        list(methods),
        int(keep),
        max_new_tokens,
        keep_going=True,
        estimator_options=estimator_options,
    )
    gallery = [
        (
            enlarge(overlay(image, run.report, vlm.processor)),
            f"{run.method}: {run.answer!r} ({run.report.tokens_after}/{run.report.tokens_before} tokens)",
        )
        for run in runs
        if run.report is not None
    ]
    table = results_table(runs)
    if with_heatmap:
        try:
            report = sensitivity_report(vlm, image, question.strip(), runs, estimator_options)
        except ValueError as err:  # zoo cannot score this model: say so instead of failing
            return gallery, f"{table}\n\nno sensitivity heatmap: {err}"
        gallery.append(
            (enlarge(heatmap(image, report, vlm.processor)), "zoo sensitivity (bright = sensitive)")
        )
    return gallery, table
