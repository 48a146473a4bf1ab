"""What the demo shows, without gradio or a browser: gallery pictures, captions and the table."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import zooprune
from zooprune.demo.compare import compare, enlarge, results_table


def test_enlarge_by_whole_factors() -> None:
    assert enlarge(Image.new("RGB", (48, 40))).size == (384, 320)
    assert enlarge(Image.new("RGB", (640, 480))).size == (640, 480)


def test_compare_gives_overlays_heatmap_and_a_table(tiny_llava_dir) -> None:
    vlm = zooprune.load(tiny_llava_dir)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    gallery, table = compare(vlm, image, " what color ? ", ["zoo", "random", "nope"], 6, max_new_tokens=2)
    assert [caption.split(":")[0] for _, caption in gallery] == [
        "zoo",
        "random",
        "zoo sensitivity (bright = sensitive)",
    ]
    assert all(picture.size == (384, 320) for picture, _ in gallery)
    assert "(6/16 tokens)" in gallery[0][1]
    rows = table.splitlines()
    assert rows[0].startswith("| method | answer | kept / total tokens")
    assert rows[2].startswith("| zoo |") and "| 6 / 16 |" in rows[2]
    assert rows[4].startswith("| nope | not run:")
    for bad, message in [
        ((None, "q", ["zoo"]), "upload"),
        ((image, " ", ["zoo"]), "question"),
        ((image, "q", []), "method"),
    ]:
        with pytest.raises(ValueError, match=message):
            compare(vlm, *bad, 4)


def test_results_table_escapes_pipes() -> None:
    from zooprune.viz.compare import MethodRun

    assert "a \\| b" in results_table([MethodRun("x", "", None, error="a | b")])
