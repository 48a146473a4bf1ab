"""The Gradio app: image upload, question, method checkboxes, budget slider -> overlays and a table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..methods import get_method, list_methods
from .compare import compare

if TYPE_CHECKING:
    from ..vlm import PrunedVLM

DEFAULT_METHODS = ("zoo", "divprune", "visionzip")


def visual_tokens(vlm: PrunedVLM) -> int:
    """Most visual tokens one image can give: (crop / patch)^2 per crop, times 1 + the most
    high-resolution crops for anyres models (576 when the processor does not tell)."""
    image_processor = getattr(vlm.processor, "image_processor", None)
    patch = getattr(vlm.processor, "patch_size", None)
    crop = getattr(image_processor, "crop_size", None)
    try:
        height = int(crop["height"] if isinstance(crop, dict) else crop.height)
        width = int(crop["width"] if isinstance(crop, dict) else crop.width)
        per_crop = (height // int(patch)) * (width // int(patch))
    except (AttributeError, KeyError, TypeError, ValueError, ZeroDivisionError):
        return 576
    pinpoints = getattr(image_processor, "image_grid_pinpoints", None) or []
    crops = max(((h // height) * (w // width) for h, w in pinpoints), default=0)
    return per_crop * (1 + crops)


def build_app(
    vlm: PrunedVLM,
    model_name: str = "",
    keep: int = 64,
    max_new_tokens: int = 16,
    estimator_options: Mapping[str, Any] | None = None,
) -> Any:
    """A ``gradio.Blocks`` app around ``vlm`` (gradio is imported here, on call); ``vlm`` is never
    reconfigured. ``estimator_options`` go to the methods that take a sensitivity estimator."""
    import gradio as gr

    total = visual_tokens(vlm)
    methods = [m for m in list_methods() if get_method(m).prunes]

    def run(image: Any, question: str, chosen: list[str], budget: float) -> tuple[Any, str]:
        try:
            return compare(
                vlm, image, question, chosen, int(budget), max_new_tokens, estimator_options=estimator_options
            )
        except ValueError as err:
            raise gr.Error(str(err)) from None

    with gr.Blocks(title="zooprune demo", analytics_enabled=False) as app:
        gr.Markdown(
            f"## zooprune: which visual tokens does each method keep?\n"
            f"Model: `{model_name or 'custom'}` ({total} visual tokens per image). Upload an image, ask "
            "a question, pick methods and a budget. Dropped patches are dimmed, greyed margins are "
            "cropped away by the processor."
        )
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="pil", label="image", elem_id="image", height=300)
                question = gr.Textbox(label="question", elem_id="question", lines=1)
                chosen = gr.CheckboxGroup(
                    methods,
                    value=[m for m in DEFAULT_METHODS if m in methods],
                    label="methods",
                    elem_id="methods",
                )
                budget = gr.Slider(
                    1, total, value=min(keep, total), step=1, label="visual tokens kept", elem_id="budget"
                )
                button = gr.Button("Run", variant="primary", elem_id="run")
            with gr.Column(scale=2):
                gallery = gr.Gallery(
                    label="kept tokens", elem_id="overlays", columns=3, height="auto", object_fit="contain"
                )
                table = gr.Markdown(elem_id="results")
        inputs = [image, question, chosen, budget]
        # one request at a time: every request runs on the one shared model
        button.click(run, inputs, [gallery, table], concurrency_limit=1)
        question.submit(run, inputs, [gallery, table], concurrency_limit=1)
    return app
