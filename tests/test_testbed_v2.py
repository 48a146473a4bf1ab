"""Testbed v2: generator, questions, descriptions, the three training stages, and the statistics."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

from zooprune.testbed.data import EVAL_SEED, TRAIN_SEED_BASE
from zooprune.testbed.evaluate import VAL_SEED
from zooprune.testbed.processor import build_tokenizer
from zooprune.testbed.questions import COUNT_WORDS
from zooprune.testbed.questions_v2 import (
    EVAL_SEED_V2,
    FAMILIES_V2,
    TRAIN_SEED_BASE_V2,
    VAL_SEED_V2,
    answer_v2,
    describe,
    draw_spec_v2,
    make_sample_v2,
    make_samples_v2,
    vocabulary_v2,
)
from zooprune.testbed.scenes import GRID, PATCH, patch_item_ids
from zooprune.testbed.scenes_v2 import PLACES, make_scene_v2, patch_regions, region_map, render_scene_v2
from zooprune.testbed.validate import (
    mean_pairwise_cosine,
    outliers,
    position_probe,
    spearman,
    summarise,
    v1_items,
)


@pytest.fixture(scope="module")
def samples():
    return make_samples_v2(EVAL_SEED_V2, 80)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(vocabulary_v2())


def test_same_seed_same_sample_and_seeds_differ():
    a, b = make_sample_v2(5, 3), make_sample_v2(5, 3)
    assert a.image.tobytes() == b.image.tobytes()
    assert (a.question, a.answer, a.scene) == (b.question, b.answer, b.scene)
    assert make_sample_v2(6, 3).image.tobytes() != a.image.tobytes()
    assert make_sample_v2(5, 4).image.tobytes() != a.image.tobytes()


def test_held_out_seeds_are_not_training_seeds():
    held_out = {VAL_SEED_V2, EVAL_SEED_V2}
    assert len(held_out) == 2 and max(held_out) < TRAIN_SEED_BASE_V2
    assert held_out.isdisjoint({VAL_SEED, EVAL_SEED}) and TRAIN_SEED_BASE_V2 != TRAIN_SEED_BASE


def test_every_family_is_asked(samples):
    counts = Counter(s.family for s in samples)  # 10 each, less where a scene does not fit
    assert set(counts) == set(FAMILIES_V2) and min(counts.values()) >= 7, counts
    assert counts["scene"] == 10 and {s.subfamily for s in samples if s.family == "scene"} == {
        "regions",
        "pattern",
    }


def test_no_patch_class_dominates_and_every_region_is_seen():
    worst = 0.0
    for i in range(60):
        scene = make_scene_v2(np.random.default_rng([77, i]))
        _, ids = render_scene_v2(scene)
        owner, regions = patch_item_ids(ids), patch_regions(scene)
        # class of a patch: its item's kind, else its background region
        classes = [f"item{k}" if k else f"region{r}" for k, r in zip(owner, regions)]
        worst = max(worst, max(Counter(classes).values()) / len(classes))
        assert set(regions.tolist()) == set(range(len(scene["regions"])))
        assert 3 <= len(scene["regions"]) <= 5
    assert worst <= 0.55, f"one patch class covers {worst:.0%} of an image"


def test_v1_scenes_fail_the_content_check():
    """The dominance measure above tells the designs apart: v1's one background covers most patches."""
    from zooprune.testbed.scenes import make_scene, render_scene

    shares = []
    for i in range(20):
        _, ids = render_scene(make_scene(np.random.default_rng([77, i])))
        shares.append(max(Counter(patch_item_ids(ids).tolist()).values()) / (GRID * GRID))
    assert min(shares) > 0.75


def test_regions_tile_the_image_and_textures_differ_from_flat():
    scene = make_scene_v2(np.random.default_rng([3, 0]))
    areas = sum((r["box"][2] - r["box"][0]) * (r["box"][3] - r["box"][1]) for r in scene["regions"])
    assert areas == 224 * 224
    image, _ = render_scene_v2(scene)
    arr = np.asarray(image, dtype=np.float32)
    blocks = arr.reshape(GRID, PATCH, GRID, PATCH, 3).std(axis=(1, 3)).mean(-1)
    assert blocks.min() > 2.0  # pixel noise at least; no perfectly flat patch


def test_answers_agree_with_the_rendered_labels(samples):
    for s in samples:
        rm = region_map(s.scene)
        if s.family == "region":
            r, c = divmod(PLACES.index(s.spec["place"]), 3)
            centre = rm[int((r + 0.5) * 224 / 3), int((c + 0.5) * 224 / 3)]
            reg = s.scene["regions"][centre]
            assert s.answer == (reg["colour"] if s.subfamily == "colour" else reg["texture"])
        elif s.family == "scene" and s.subfamily == "regions":
            assert s.answer == COUNT_WORDS[len(np.unique(rm))]
        elif s.family == "scene":
            px = Counter()
            for k, n in zip(*np.unique(rm, return_counts=True)):
                px[s.scene["regions"][k]["texture"]] += n
            assert s.answer == px.most_common(1)[0][0]
        assert s.answer == answer_v2(s.scene, s.spec)


def test_tokenizer_knows_every_question_answer_and_description_word(samples, tok):
    unk = tok.unk_token_id
    for s in samples:
        for text in (s.question, s.answer, describe(s.scene)):
            assert unk not in tok(text, add_special_tokens=False)["input_ids"], text
        assert len(tok(s.answer, add_special_tokens=False)["input_ids"]) == 1


def test_description_covers_every_region_and_item(samples):
    for s in samples:
        text = describe(s.scene)
        assert f"{COUNT_WORDS[len(s.scene['regions'])]} regions" in text
        for reg in s.scene["regions"]:
            assert f"{reg['colour']} {reg['texture']}" in text
        for it in s.scene["items"]:
            if it["kind"] == "shape":
                assert f"{it['size']} {it['colour']} {it['shape']} at" in text
            elif it["kind"] == "tile":
                assert f"white tile {it['text']} at" in text
        kinds = Counter(it["kind"] for it in s.scene["items"])
        assert text.count("checker at") == kinds["checker"]
        assert text.count("caption at") == kinds["caption"]


def test_hard_negative_changes_the_description():
    from zooprune.testbed.stream_v2 import perturb

    for i in range(20):
        rng = np.random.default_rng([9, i])
        scene = make_scene_v2(rng)
        before = json.dumps(scene)
        assert describe(perturb(scene, rng)) != describe(scene)
        assert json.dumps(scene) == before  # the original is untouched


# ---------------------------------------------------------------------------- statistics
def test_spearman_cosine_and_outliers_on_hand_built_cases():
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 30, 40.0])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([4, 3, 2, 1.0])) == pytest.approx(-1.0)
    assert spearman(np.array([1, 1, 2.0]), np.array([1, 2, 3.0])) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(spearman(np.ones(4), np.arange(4.0)))
    assert mean_pairwise_cosine(torch.eye(4)) == pytest.approx(0.0)
    assert mean_pairwise_cosine(torch.ones(5, 3)) == pytest.approx(1.0)
    assert outliers(np.array([1.0, 1.0, 1.0, 3.5, 2.9])).tolist() == [False, False, False, True, False]


def _row(cats, importance, sens, norm):
    n = len(cats)
    feats = np.random.default_rng(n).normal(size=(n, 4)).astype(np.float32)
    return {
        "categories": np.array(cats),
        "importance": np.array(importance, dtype=np.float64),
        "sensitivity": np.array(sens, dtype=np.float64),
        "vision_norm": np.array(norm, dtype=np.float64),
        "token_norm": np.array(norm, dtype=np.float64),
        "ablation": {c: 1.0 if c == "shape" else 0.0 for c in set(cats)},
        "vision_feats": feats,
        "token_feats": feats,
        "vision_cos": 0.5,
        "token_cos": 0.25,
    }


def test_summary_statistics_on_a_hand_built_case():
    cats = ["background"] * 8 + ["shape"] * 2
    # importance: shapes hold 3/4 of it; sensitivity: background highest, the exact reverse of importance
    imp = [0.25 / 8] * 8 + [0.375, 0.375]
    sens = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0.5]
    norm = [1.0] * 9 + [10.0]
    rep = summarise([_row(cats, imp, sens, norm), _row(cats, imp, sens, norm)], text_norm=0.4)
    shape, bg = rep["categories"]["shape"], rep["categories"]["background"]
    assert shape["importance_share"]["mean"] == pytest.approx(0.75)
    assert bg["importance_share"]["mean"] == pytest.approx(0.25)
    assert bg["share_of_top_sensitive"]["mean"] == pytest.approx(1.0)  # top 20 % = 2 background tokens
    assert shape["share_of_top_sensitive"]["mean"] == pytest.approx(0.0)
    assert shape["ablation_drop"]["mean"] == pytest.approx(1.0)
    assert shape["share_of_vision_outliers"]["mean"] == pytest.approx(1.0)  # the norm-10 token
    assert rep["geometry"]["vision_outliers"]["mean"] == pytest.approx(0.1)
    # ranks with ties: importance (3.5 x 8, 8.5 x 2) against sensitivity 9..0: -sqrt(0.4848...)
    assert rep["spearman"]["sens_vs_importance"]["mean"] == pytest.approx(-0.6963106, abs=1e-6)
    assert rep["geometry"]["token_cos"]["mean"] == pytest.approx(0.25)
    assert rep["by_family"]["all"]["shape"]["importance_share"]["mean"] == pytest.approx(0.75)
    assert rep["by_family"]["all"]["background"]["ablation_drop"]["mean"] == pytest.approx(0.0)


def test_position_probe_finds_position_only_where_it_is_encoded():
    grid = 14
    pos = np.arange(grid * grid)
    rng = np.random.default_rng(0)

    def row(encoded: bool):
        f = rng.normal(size=(grid * grid, 36)).astype(np.float32)
        if encoded:  # one-hot column and row (readable by both the regression and the classifier)
            f[:, :28] = 0.0
            f[pos, pos % grid] = 3.0
            f[pos, grid + pos // grid] = 3.0
        return {"categories": np.array(["region"] * 180 + ["shape"] * 16), "vision_feats": f}

    good = position_probe([row(True) for _ in range(4)])
    bad = position_probe([row(False) for _ in range(4)])
    assert good["col"]["r2_all"] > 0.99 and good["row"]["r2_items"] > 0.99
    assert good["col"]["acc_all"] > 0.9 and good["row"]["acc_items"] > 0.9
    assert bad["col"]["r2_all"] < 0.1 and bad["row"]["r2_all"] < 0.1
    assert bad["col"]["acc_all"] < 0.2 and bad["row"]["acc_items"] < 0.3


def test_v1_items_label_every_patch():
    items = v1_items(EVAL_SEED, 3)
    for it in items:
        assert it.categories.shape == (196,) and "background" in set(it.categories.tolist())
        assert set(it.categories.tolist()) <= {"background", "shape", "tile", "checker", "caption"}


# ---------------------------------------------------------------------------- training smoke
def test_each_v2_stage_trains_resumes_and_exports(tmp_path):
    from zooprune.testbed.train_v2 import STAGES, TrainerV2, parse_args
    from zooprune.testbed.validate import main as validate_main

    argv = [
        "--work", str(tmp_path / "work"), "--out", str(tmp_path / "model"), "--max-steps", "2",
        "--batch-clip", "3", "--batch-align", "2", "--batch-qa", "2", "--qa", "2", "--workers", "0",
        "--val-n", "8", "--eval-every", "100",
    ]  # fmt: skip
    trainer = TrainerV2(parse_args(argv))
    vision = {}  # the vision tower's weights after each stage
    for stage in STAGES:
        assert trainer.state["stage"] == stage
        trainer.run_stage(stage)
        vision[stage] = {k: v.clone() for k, v in trainer.model.model.vision_tower.state_dict().items()}
        rows = [r for r in trainer.log if r["stage"] == stage]
        assert rows and all(math.isfinite(r["loss"]) for r in rows)
        again = TrainerV2(parse_args([*argv, "--resume"]))
        assert again.state == trainer.state
        mine, theirs = trainer.blob(), again.blob()
        for part in ("model", "text", "img_head", "std"):
            for k, v in mine[part].items():
                assert torch.equal(v, theirs[part][k]), (stage, part, k)
        assert len(again.opt.param_groups[0]["params"]) == len(trainer.opt.param_groups[0]["params"])
        for k, slot in mine["opt"]["state"].items():
            for name, v in slot.items():
                assert torch.equal(v, theirs["opt"]["state"][k][name]), (stage, "opt", k, name)
        trainer = again
    assert trainer.state["stage"] == "done"
    # align keeps the tower frozen; qa fine-tunes it (--lr-vision-qa) with the grounding loss on
    assert all(torch.equal(v, vision["clip"][k]) for k, v in vision["align"].items())
    assert not all(torch.equal(v, vision["align"][k]) for k, v in vision["qa"].items())
    qa_rows = [r for r in trainer.log if r["stage"] == "qa" and "loss" in r]
    assert all(r["ground_w"] == 1.0 and math.isfinite(r["ground_loss"]) for r in qa_rows)
    assert [r["stage"] for r in trainer.log][0] == "clip"
    acc = trainer.evaluate()
    assert set(FAMILIES_V2) <= set(acc) and 0.0 <= acc["overall"] <= 1.0
    trainer.export()
    out = tmp_path / "stats.json"
    validate_main(["--model", str(tmp_path / "model"), "--variant", "v2", "--n", "2", "--out", str(out)])
    rep = json.loads(out.read_text())
    assert rep["images"] == 2 and "region" in rep["categories"]
    assert rep["categories"]["region"]["tokens"]["mean"] > 0


def test_train_cli_dispatches_variant_v2(tmp_path, capsys):
    from zooprune.testbed.train import main

    main(["--variant", "v2", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "m"), "--export-only"])
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    tok = json.loads((tmp_path / "m" / "tokenizer.json").read_text())
    assert "texture" not in tok["model"]["vocab"] and "stripes" in tok["model"]["vocab"]  # the v2 vocabulary
    assert cfg["text_config"]["vocab_size"] == len(build_tokenizer(vocabulary_v2()))


def test_written_v2_split_reads_back_through_eval_jsonl(tmp_path):
    from zooprune.eval.data import jsonl_items
    from zooprune.testbed.questions_v2 import write_split_v2

    path = write_split_v2(tmp_path, EVAL_SEED_V2, 10)
    items = jsonl_items(path)
    want = make_samples_v2(EVAL_SEED_V2, 10)
    assert [(i.question, i.answer, i.family) for i in items] == [
        (s.question, s.answer, s.family) for s in want
    ]
    assert np.array_equal(
        np.asarray(__import__("PIL.Image").Image.open(items[3].image)), np.asarray(want[3].image)
    )
    with pytest.raises(ValueError, match="training seed"):
        write_split_v2(tmp_path, TRAIN_SEED_BASE_V2, 1)


def test_ground_patches_v2_mark_what_each_question_is_about():
    from zooprune.testbed.scenes_v2 import patch_regions, place_region
    from zooprune.testbed.stream_v2 import ground_patches_v2

    seen = set()
    for i in range(60):
        rng = np.random.default_rng(i)
        scene = make_scene_v2(rng)
        _, ids = render_scene_v2(scene)
        spec = draw_spec_v2(scene, rng)
        g = ground_patches_v2(scene, ids, spec)
        seen.add(spec["family"])
        if spec["family"] == "scene":
            assert g is None  # whole-scene questions get no target
            continue
        assert g.shape == (196,) and g.dtype == bool
        if spec["family"] == "region":  # patches of the answered region inside the asked third
            k = place_region(scene, spec["place"])
            assert g.any() and (patch_regions(scene)[g] == k).all()
            assert g.sum() <= 25  # a third of a 14x14 grid holds at most 5x5 patch centres
        if spec["family"] == "reading":  # the tile's patches and nothing else
            tile = [j for j, it in enumerate(scene["items"]) if it["kind"] == "tile"][0]
            assert g.any() and all(
                (ids.reshape(14, 16, 14, 16)[r, :, c, :] == tile + 1).any()
                for r, c in zip(*np.nonzero(g.reshape(14, 14)))
            )
    assert {"scene", "region", "reading"} <= seen


def test_restart_qa_keeps_weights_and_restarts_the_clock(tmp_path):
    from zooprune.testbed.train_v2 import TrainerV2, parse_args

    argv = [
        "--work", str(tmp_path / "work"), "--out", str(tmp_path / "model"), "--max-steps", "1",
        "--batch-clip", "3", "--batch-align", "2", "--batch-qa", "2", "--qa", "2", "--workers", "0",
        "--val-n", "8", "--eval-every", "100", "--save-every", "0",
    ]  # fmt: skip
    t = TrainerV2(parse_args(argv))
    for stage in ("clip", "align"):
        t.run_stage(stage)
    t.state["t"]["qa"] = 12.5  # as if part of qa had run
    t.save()
    again = TrainerV2(parse_args([*argv, "--resume", "--restart-qa", "--ground", "0"]))
    assert again.state["t"]["qa"] == 0.0 and again.state["step"] == t.state["step"]
    assert not again.opt.state  # a fresh optimiser
    mine, theirs = t.blob()["model"], again.blob()["model"]
    assert all(torch.equal(v, theirs[k]) for k, v in mine.items())
    assert again.log[-1]["restart_qa"]["ground"] == 0.0


def test_learning_curves_split_qa_at_restart_and_draw(tmp_path):
    from zooprune.testbed.curves import plot_curves, qa_segments, read_log

    rows = [
        {"stage": "clip", "step": 1, "t": 1.0, "loss": 4.0, "i2t_acc": 0.1, "vs_negative": 0.5},
        {"stage": "align", "step": 1, "t": 1.0, "loss": 4.0, "token_acc": 0.1},
        {"stage": "qa", "step": 1, "t": 1.0, "loss": 2.0, "train_acc": 0.2},
        {"stage": "qa", "step": 2, "t": 60.0, "val": {"overall": 0.3, "region": 0.2}},
        {"stage": "qa", "step": 2, "restart_qa": {"ground": 1.0}},
        {"stage": "qa", "step": 3, "t": 1.0, "loss": 1.5, "train_acc": 0.4},
        {"stage": "qa", "step": 4, "t": 60.0, "val": {"overall": 0.5, "region": 0.6}},
    ]
    jsonl = tmp_path / "log.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_log(jsonl) == rows
    segments = qa_segments(rows)
    assert [[r["step"] for r in s] for s in segments] == [[1, 2], [3, 4]]
    out = plot_curves(rows, tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
