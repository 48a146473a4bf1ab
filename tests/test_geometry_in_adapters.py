"""Family geometry lives in the family adapter: each adapter's ``token_layout`` places exactly the
tokens its ``encode`` produced for a real processor's image, and ``zooprune.viz`` dispatches on
``report.model_type``."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import zooprune
from zooprune.adapters import adapter_class, get_adapter
from zooprune.config import PruneConfig
from zooprune.report import PruneReport
from zooprune.testing.tiny import BUILDERS
from zooprune.viz import token_layout
from zooprune.vlm import PrunedVLM

from .conftest import random_image

#: View names for the wide 240 x 110 image (several crops / tiles where the family tiles).
VIEWS = {
    "gemma3": ["image"],
    "internvl": ["tiles", "thumbnail"],
    "llava": ["image"],
    "llava_next": ["base", "high-res"],
    "llava_onevision": ["base", "high-res"],
    "qwen2_vl": ["image"],
    "qwen2_5_vl": ["image"],
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def tiny_vlm(request) -> PrunedVLM:
    model, processor = BUILDERS[request.param](seed=0)
    return PrunedVLM(model, processor, PruneConfig(method="none", keep=1))


def test_every_family_is_covered() -> None:
    assert sorted(VIEWS) == sorted(BUILDERS)


@pytest.mark.parametrize("size", [(240, 110), (90, 200), (48, 40)])
def test_layout_covers_exactly_the_encoded_tokens(tiny_vlm, size) -> None:
    """Through the real processor: the views' indices are unique, and together with the tokens that
    show no region (image newlines, the adapter's ``always_keep``) they are all N encoded tokens,
    N being the prompt's placeholder count and the report's ``tokens_before``."""
    image = random_image(5, size)
    adapter = get_adapter(tiny_vlm.model)
    inputs = tiny_vlm.encode_inputs([image], ["what is in the image ?"])
    extras = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "pixel_values")}
    with torch.no_grad():
        [tokens] = adapter.encode(
            inputs["pixel_values"], frozenset(), **adapter.vision_inputs(inputs["input_ids"], extras)
        )
    [report] = tiny_vlm.prepare([image], ["what is in the image ?"]).reports
    n = int(tokens.projected.shape[0])
    assert report.tokens_before == n == int((inputs["input_ids"] == adapter.image_token_id).sum())
    assert report.model_type == tiny_vlm.model.config.model_type

    views = adapter_class(report.model_type).token_layout(size, report, tiny_vlm.processor)
    drawn = np.concatenate([view.indices for view in views])
    blank = set() if tokens.always_keep is None else set(tokens.always_keep.tolist())
    assert len(set(drawn.tolist())) == len(drawn), "a token is drawn twice"
    assert not blank & set(drawn.tolist())
    assert sorted(set(drawn.tolist()) | blank) == list(range(n))
    width, height = size
    for view in views:
        assert view.boxes.shape == (len(view.indices), 4)
        assert len(view.indices) == view.grid[0] * view.grid[1]
        x0, y0, x1, y1 = view.boxes.T
        assert (0 <= x0).all() and (x0 <= x1).all() and (x1 <= width).all()
        assert (0 <= y0).all() and (y0 <= y1).all() and (y1 <= height).all()
    if size == (240, 110):
        assert [view.name for view in views] == VIEWS[report.model_type]
    # zooprune.viz asks the same adapter
    assert [v.name for v in token_layout(size, report, tiny_vlm.processor)] == [v.name for v in views]


def test_a_report_without_model_type_is_a_clear_error(tiny_llava) -> None:
    _, processor = tiny_llava
    report = PruneReport("test", 1, 16, 1, torch.tensor([0]), grid=(4, 4))
    with pytest.raises(ValueError, match="no model_type"):
        token_layout((32, 32), report, processor)
    with pytest.raises(ValueError, match="no model_type"):
        zooprune.viz.overlay(random_image(0, (32, 32)), report, processor)
    report.model_type = "no-such-family"
    with pytest.raises(ValueError, match="unsupported model type 'no-such-family'"):
        token_layout((32, 32), report, processor)


def test_geometry_module_imports_neither_viz_nor_adapters() -> None:
    """``zooprune.geometry`` sits below both its users (no import cycle through it)."""
    source = Path(zooprune.__file__).parent / "geometry.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom):
            imported.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not {m for m in imported if "viz" in m or "adapters" in m}, imported
