"""Single-item place questions (the step before spatial comparisons) and the spatial probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zooprune.testbed.batches import touched_patches
from zooprune.testbed.evaluate import ValItem
from zooprune.testbed.processor import build_tokenizer
from zooprune.testbed.questions_v2 import vocabulary_v2
from zooprune.testbed.scenes_v2 import make_scene_v2, render_scene_v2
from zooprune.testbed.stream_v2 import V2Stream, place_drill, place_question

from .conftest import load_benchmark_script


def test_place_question_answers_from_the_cell_and_skips_the_middle_line():
    item = {"colour": "red", "shape": "circle", "col": 1, "row": 5}
    assert place_question(item, True) == ("is the red circle at the left or right of the image?", "left")
    assert place_question(item, False) == ("is the red circle at the top or bottom of the image?", "bottom")
    assert place_question(dict(item, col=6), True)[1] == "right"
    assert place_question(dict(item, row=0), False)[1] == "top"
    assert place_question(dict(item, col=3), True) is None
    assert place_question(dict(item, row=3), False) is None


def test_place_drill_names_one_shape_whose_pixels_lie_on_the_answered_side():
    tok = build_tokenizer(vocabulary_v2())
    answers = []
    for i in range(150):
        rng = np.random.default_rng([4, i])
        scene = make_scene_v2(rng)
        drawn = place_drill(scene, rng)
        if drawn is None:
            continue
        q, a, k = drawn
        item = scene["items"][k]
        assert item["kind"] == "shape" and f"the {item['colour']} {item['shape']} at" in q
        same = [it for it in scene["items"] if it.get("colour") == item["colour"] and it.get("shape") == item["shape"]]
        assert len(same) == 1  # the name picks one item
        _, ids = render_scene_v2(scene)
        ys, xs = np.nonzero(ids == k + 1)
        centre = {"left": xs.mean() < 112, "right": xs.mean() > 112, "top": ys.mean() < 112, "bottom": ys.mean() > 112}
        assert centre[a], (q, a, item["box"])
        assert tok.unk_token_id not in tok(q, add_special_tokens=False)["input_ids"]
        assert tok.convert_tokens_to_ids(a) != tok.unk_token_id
        answers.append(a)
    assert set(answers) == {"left", "right", "top", "bottom"} and len(answers) > 120


def test_place_share_replaces_questions_with_grounded_ones_and_zero_leaves_the_stream():
    tok = build_tokenizer(vocabulary_v2())
    plain = V2Stream("qa", 11, 0, 4, tok, 6).make_batch(2)
    zero = V2Stream("qa", 11, 0, 4, tok, 6, place=0.0).make_batch(2)
    placed = V2Stream("qa", 11, 0, 4, tok, 6, place=0.5).make_batch(2)
    assert [[q["q"] for q in r] for r in plain["qas"]] == [[q["q"] for q in r] for r in zero["qas"]]
    assert torch.equal(plain["pixel_values"], placed["pixel_values"])
    fams = [q["family"] for r in placed["qas"] for q in r]
    assert 0 < fams.count("place") < len(fams)
    for r_plain, r_place in zip(plain["qas"], placed["qas"]):
        for qp, qd in zip(r_plain, r_place):
            if qd["family"] != "place":
                assert qd["q"] == qp["q"]
            else:
                assert qd["ground"].dtype == bool and 0 < qd["ground"].sum() < 20
    with pytest.raises(ValueError, match="place share"):
        V2Stream("qa", 11, 0, 4, tok, 6, place=1.0)
    with pytest.raises(ValueError, match="drill \\+ place"):
        V2Stream("qa", 11, 0, 4, tok, 6, drill=0.5, place=0.5)


def test_place_drill_ground_is_the_named_item():
    rng = np.random.default_rng([9, 1])
    scene = make_scene_v2(rng)
    drawn = place_drill(scene, rng)
    assert drawn is not None
    _, ids = render_scene_v2(scene)
    ground = touched_patches(ids, [drawn[2]])
    assert ground.any() and ground.sum() < 20


def test_spatial_probe_pairs_each_question_with_the_places_of_its_items():
    probe = load_benchmark_script("testbed_spatial_probe")
    cases = probe.spatial_cases("v2", seed=7, n=30)
    assert len(cases) >= 20
    for c in cases:
        assert c.spatial.answer in ("left", "right", "above", "below")
        horizontal = c.spatial.answer in ("left", "right")
        asked = [q for q in c.places if q is not None]
        for q in asked:
            assert q.answer in (("left", "right") if horizontal else ("top", "bottom"))
        if c.opposite:  # the places decide the comparison
            a, b = (q.answer for q in c.places)
            assert a != b and c.spatial.answer == {"left": "left", "right": "right", "top": "above", "bottom": "below"}[a]


def test_spatial_probe_summary_counts_a_hand_made_case():
    probe = load_benchmark_script("testbed_spatial_probe")
    px = torch.zeros(3, 2, 2)

    def item(answer: str) -> ValItem:
        return ValItem(px, "q", answer, "x")

    cases = [
        probe.SpatialCase(item("left"), [item("left"), item("right")], True),
        probe.SpatialCase(item("right"), [item("right"), item("left")], True),
        probe.SpatialCase(item("above"), [item("top"), None], False),
    ]
    spatial_pred = ["left", "left", "below"]
    place_pred = ["left", "right", "left", "left", "top", None]
    rep = probe.summarise(cases, spatial_pred, place_pred)
    assert rep["spatial_acc"]["n"] == 3 and rep["spatial_acc"]["acc"] == pytest.approx(1 / 3)
    assert rep["place_acc"]["n"] == 5 and rep["place_acc"]["acc"] == pytest.approx(4 / 5)
    assert rep["spatial_opposite_sides"]["acc"] == pytest.approx(1 / 2)
    given = rep["spatial_given_places"]
    assert given["both_places_right"] == {"n": 1, "acc": 1.0, "ci95": pytest.approx(given["both_places_right"]["ci95"])}
    assert given["a_place_wrong"]["n"] == 1 and given["a_place_wrong"]["acc"] == 0.0
    assert rep["predicted_place"] == {"left": 3, "right": 1, "top": 1}


def test_held_out_family_keeps_only_that_family_and_names_a_bad_variant():
    from zooprune.testbed.evaluate import held_out_family

    got = held_out_family("v2", "spatial", 7, 30)
    assert 20 <= len(got) <= 30 and {s.family for s in got} == {"spatial"}
    assert [s.question for s in got] == [c.question for c in held_out_family("v2", "spatial", 7, 30)]
    assert {s.family for s in held_out_family("v1", "choice", 7, 10)} == {"choice"}
    with pytest.raises(ValueError, match="unknown testbed variant 'v3'"):
        held_out_family("v3", "spatial", 7, 3)
