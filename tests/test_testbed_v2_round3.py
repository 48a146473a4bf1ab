"""Testbed v2 recipe additions after run 2: layout hard negatives, choice drills, a new training round,
``--stop-after`` and the gated fresh-run script."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from zooprune.testbed.processor import build_tokenizer
from zooprune.testbed.questions import LETTERS
from zooprune.testbed.questions_v2 import describe, vocabulary_v2
from zooprune.testbed.scenes_v2 import make_scene_v2
from zooprune.testbed.stream_v2 import NEGATIVES, V2Stream, _apply, choice_drill, perturb


def tiny_run_argv(tmp_path, steps: int, *extra: str) -> list[str]:
    """``train_v2`` arguments for a few-step run in ``tmp_path`` (no data worker, no saves between)."""
    return [
        "--work", str(tmp_path / "work"), "--out", str(tmp_path / "model"), "--max-steps", str(steps),
        "--batch-clip", "3", "--batch-align", "2", "--batch-qa", "2", "--qa", "2", "--workers", "0",
        "--val-n", "8", "--eval-every", "100", "--save-every", "0", *extra,
    ]  # fmt: skip


def _scene_with_tile_and_shapes(start: int = 0) -> dict:
    for i in range(start, start + 200):
        scene = make_scene_v2(np.random.default_rng([5, i]))
        kinds = [it["kind"] for it in scene["items"]]
        if "tile" in kinds and kinds.count("shape") >= 2:
            return scene
    raise AssertionError("no scene with a tile and two shapes")


@pytest.mark.parametrize("kind", NEGATIVES["layout"])
def test_each_layout_negative_changes_the_description(kind):
    for k in range(5):
        scene = _scene_with_tile_and_shapes(40 * k)
        before = json.dumps(scene)
        out = json.loads(before)
        assert _apply(out, kind, np.random.default_rng(k)), kind
        assert describe(out) != describe(scene), kind
        assert json.dumps(scene) == before


def test_swaps_keep_the_words_and_change_only_places():
    """A swap says the same things about the scene, only where they are differs."""
    for k in range(5):
        scene = _scene_with_tile_and_shapes(40 * k)
        for kind in ("region_swap", "item_swap"):
            out = json.loads(json.dumps(scene))
            assert _apply(out, kind, np.random.default_rng(k))
            assert describe(out) != describe(scene)
            assert sorted(describe(out).split()) == sorted(describe(scene).split()), kind


def test_digit_negative_changes_the_tile_digit_only():
    scene = _scene_with_tile_and_shapes()
    out = json.loads(json.dumps(scene))
    assert _apply(out, "digit", np.random.default_rng(3))
    (a,) = [it for it in scene["items"] if it["kind"] == "tile"]
    (b,) = [it for it in out["items"] if it["kind"] == "tile"]
    assert a["text"] != b["text"] and a["box"] == b["box"]


def _perturb_as_in_run_two(scene: dict, rng: np.random.Generator) -> dict:
    """The hard negative of runs 1-2, as written then (a copy, to pin ``basic`` to it)."""
    from zooprune.testbed.questions import COLOURS, SHAPES
    from zooprune.testbed.scenes_v2 import REGION_COLOURS, TEXTURES

    out = json.loads(json.dumps(scene))
    shapes = [it for it in out["items"] if it["kind"] == "shape"]
    what = int(rng.integers(4))
    if what < 2 or not shapes:
        reg = out["regions"][int(rng.integers(len(out["regions"])))]
        if what == 0:
            reg["colour"] = str(rng.choice([c for c in REGION_COLOURS if c != reg["colour"]]))
        else:
            reg["texture"] = str(rng.choice([t for t in TEXTURES if t != reg["texture"]]))
    else:
        it = shapes[int(rng.integers(len(shapes)))]
        if what == 2:
            it["colour"] = str(rng.choice([c for c in COLOURS if c != it["colour"]]))
        else:
            it["shape"] = str(rng.choice([s for s in SHAPES if s != it["shape"]]))
    return out


def test_basic_negatives_draw_exactly_as_runs_one_and_two():
    for i in range(60):
        scene = make_scene_v2(np.random.default_rng([8, i]))
        new = perturb(scene, np.random.default_rng([8, i, 1]), "basic")
        old = _perturb_as_in_run_two(scene, np.random.default_rng([8, i, 1]))
        assert describe(new) == describe(old) != describe(scene)


def test_choice_drill_names_its_answer_and_the_tokenizer_knows_it():
    tok = build_tokenizer(vocabulary_v2())
    letters = []
    for i in range(200):
        q, a = choice_drill(np.random.default_rng([3, i]))
        words = q.split()
        value = words[0]
        opts = {words[k]: words[k + 1] for k in range(2, 10, 2)}  # "A." -> value
        assert opts[f"{a}."] == value and list(opts.values()).count(value) == 1
        assert tok.unk_token_id not in tok(q, add_special_tokens=False)["input_ids"]
        letters.append(a)
    assert set(letters) == set(LETTERS) and max(letters.count(x) for x in LETTERS) < 80


def test_drill_share_replaces_questions_and_zero_leaves_the_stream_as_it_was():
    tok = build_tokenizer(vocabulary_v2())
    plain = V2Stream("qa", 11, 0, 4, tok, 6).make_batch(2)
    zero = V2Stream("qa", 11, 0, 4, tok, 6, drill=0.0).make_batch(2)
    drilled = V2Stream("qa", 11, 0, 4, tok, 6, drill=0.5).make_batch(2)
    assert torch.equal(plain["pixel_values"], zero["pixel_values"])
    assert [[q["q"] for q in r] for r in plain["qas"]] == [[q["q"] for q in r] for r in zero["qas"]]
    fams = [q["family"] for r in drilled["qas"] for q in r]
    assert 0 < fams.count("drill") < len(fams)
    # the questions that were not replaced are the same as without drills
    for r_plain, r_drill in zip(plain["qas"], drilled["qas"]):
        for qp, qd in zip(r_plain, r_drill):
            assert qd["family"] == "drill" or qd["q"] == qp["q"]
    with pytest.raises(ValueError, match="drill share"):
        V2Stream("qa", 11, 0, 4, tok, 6, drill=1.0)
    with pytest.raises(ValueError, match="hard negatives"):
        V2Stream("clip", 11, 0, 4, tok, 6, negatives="nope")


def test_restart_clip_starts_a_new_round_on_the_trained_weights(tmp_path):
    from zooprune.testbed.train_v2 import STAGES, TrainerV2, parse_args

    argv = tiny_run_argv(tmp_path, 2)
    t = TrainerV2(parse_args(argv))
    for stage in STAGES:
        t.run_stage(stage)
    assert t.state["stage"] == "done"
    std = {k: v.clone() for k, v in t.std.state_dict().items()}
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    again = TrainerV2(
        parse_args([*argv, "--resume", "--restart-clip", "--hard-negatives", "layout", "--choice-drill", "0.2"])
    )
    assert again.state["stage"] == "clip" and again.state["round"] == 1
    assert all(v == 0.0 for v in again.state["t"].values()) and not again.opt.state
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in before.items())
    first = again._loader("clip", 0)
    other = t._loader("clip", 0)
    assert not torch.equal(next(first)["pixel_values"], next(other)["pixel_values"])  # new data
    for stage in STAGES:
        again.run_stage(stage)
    assert again.state["stage"] == "done" and again.state["round"] == 1
    # the tower trained again in clip; the projector's input standardisation was kept
    tower = {k: v for k, v in again.model.state_dict().items() if "vision_tower" in k}
    assert tower and not all(torch.equal(v, before[k]) for k, v in tower.items())
    assert all(torch.equal(v, again.std.state_dict()[k]) for k, v in std.items())
    assert any("restart_clip" in r for r in again.log)
    with pytest.raises(ValueError, match="exclude"):
        TrainerV2(parse_args([*argv, "--resume", "--restart-clip", "--restart-qa"]))


def test_restart_qa_after_a_finished_run_goes_on_with_new_qa_data(tmp_path):
    from zooprune.testbed.train_v2 import STAGES, TrainerV2, parse_args

    argv = tiny_run_argv(tmp_path, 2)
    t = TrainerV2(parse_args(argv))
    for stage in STAGES:
        t.run_stage(stage)
    assert t.state["stage"] == "done" and t.state["qa_steps"] == 2  # steps count per stage
    again = TrainerV2(parse_args([*argv, "--resume", "--restart-qa"]))
    assert again.state["stage"] == "qa" and again.state["step"] == 2 and again.state["t"]["qa"] == 0.0
    again.run_stage("qa")
    assert again.state["stage"] == "done" and again.state["qa_steps"] == 4


def test_sincos_positions_code_column_and_row_at_the_asked_norm():
    from zooprune.testbed.tower_v2 import sincos_positions

    t = sincos_positions(128, grid=14, norm=2.0)
    assert t.shape == (197, 128) and torch.all(t[0] == 0)
    assert torch.allclose(t[1:].norm(dim=1), torch.full((196,), 2.0), atol=1e-5)
    patch = t[1:].reshape(14, 14, 128)  # [row, col, dim]
    # the first half depends on the column only, the second on the row only
    assert torch.allclose(patch[3, 5, :64], patch[9, 5, :64]) and not torch.allclose(patch[3, 5], patch[9, 5])
    assert torch.allclose(patch[4, 2, 64:], patch[4, 11, 64:])
    assert len({tuple(r.tolist()) for r in t[1:]}) == 196  # every patch has its own code
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_positions(30)


def test_patch_targets_are_each_patchs_grey_levels_and_mean_colour():
    from zooprune.testbed.tower_v2 import RECON_DIM, patch_targets

    px = torch.zeros(2, 3, 224, 224)
    px[1, 0, 16:32, 32:48] = 3.0  # red channel of patch (row 1, col 2) of image 1
    px[1, 2, 16:32, 32:40] = 6.0  # blue on its left half
    out = patch_targets(px)
    assert out.shape == (2, 196, RECON_DIM)
    k = 1 * 14 + 2
    grey = out[1, k, :256].reshape(16, 16)
    assert torch.allclose(grey[:, :8], torch.full((16, 8), 3.0)) and torch.allclose(grey[:, 8:], torch.ones(16, 8))
    assert torch.allclose(out[1, k, 256:], torch.tensor([3.0, 0.0, 3.0]))
    assert out[0].abs().sum() == 0 and out[1, k + 1].abs().sum() == 0


def test_fixed_positions_stay_fixed_and_reconstruction_is_trained(tmp_path):
    from zooprune.testbed.tower_v2 import position_table, sincos_positions
    from zooprune.testbed.train_v2 import TrainerV2, parse_args

    argv = tiny_run_argv(tmp_path, 3, "--fixed-position", "2.0", "--recon", "1.0")
    t = TrainerV2(parse_args(argv))
    table = position_table(t.model.model.vision_tower).weight
    want = sincos_positions(table.shape[1], norm=2.0)
    head = t.recon_head.weight.clone()
    for stage in ("clip", "align", "qa"):
        t.run_stage(stage)
        assert torch.equal(table, want), stage  # clip and qa (which fine-tunes the tower) leave it
    assert not torch.equal(head, t.recon_head.weight)
    rows = [r for r in t.log if r["stage"] == "clip" and "recon" in r]
    assert rows and all(math.isfinite(r["recon"]) for r in rows)
    again = TrainerV2(parse_args([*argv, "--resume"]))
    assert torch.equal(again.recon_head.weight, t.recon_head.weight)


def test_learning_curves_start_a_segment_of_every_stage_at_a_new_round(tmp_path):
    from zooprune.testbed.curves import plot_curves, segments

    rows = [
        {"stage": "clip", "step": 1, "t": 1.0, "loss": 4.0, "i2t_acc": 0.1, "vs_negative": 0.5},
        {"stage": "align", "step": 1, "t": 1.0, "loss": 4.0, "token_acc": 0.1},
        {"stage": "qa", "step": 1, "t": 1.0, "loss": 2.0, "train_acc": 0.2},
        {"stage": "qa", "step": 1, "restart_qa": {}},
        {"stage": "qa", "step": 2, "t": 1.0, "loss": 1.0, "train_acc": 0.3},
        {"stage": "clip", "step": 0, "restart_clip": {}, "round": 1},
        {"stage": "clip", "step": 1, "t": 2.0, "loss": 3.0, "i2t_acc": 0.4, "vs_negative": 0.6, "recon": 1.0},
        {"stage": "qa", "step": 1, "t": 1.0, "loss": 0.5, "train_acc": 0.6},
    ]
    assert [[r["t"] for r in s] for s in segments(rows, "clip")] == [[1.0], [2.0]]
    assert [[r["train_acc"] for r in s] for s in segments(rows, "qa")] == [[0.2], [0.3], [0.6]]
    assert [len(s) for s in segments(rows, "align")] == [1]
    assert plot_curves(rows, tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------- --stop-after and the gated script
def _stages_logged(work) -> list[str]:
    rows = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    return sorted({r["stage"] for r in rows if "loss" in r})


def test_stop_after_clip_then_resume_runs_the_rest(tmp_path):
    from zooprune.testbed.train_v2 import TrainerV2, parse_args

    argv = tiny_run_argv(tmp_path, 2)
    first = TrainerV2(parse_args([*argv, "--stop-after", "clip"]))
    first.run()
    assert first.state["stage"] == "align" and first.state["step"] == 0
    assert _stages_logged(tmp_path / "work") == ["clip"]
    assert (tmp_path / "model" / "config.json").is_file()  # exported for the probe

    second = TrainerV2(parse_args([*argv, "--resume", "--stop-after", "align"]))
    assert second.state["stage"] == "align"
    second.run()
    assert second.state["stage"] == "qa"
    assert _stages_logged(tmp_path / "work") == ["align", "clip"]

    third = TrainerV2(parse_args([*argv, "--resume"]))
    third.run()
    assert third.state["stage"] == "done"
    assert _stages_logged(tmp_path / "work") == ["align", "clip", "qa"]
    assert any("val" in r for r in third.log)  # the final held-out evaluation ran


def test_stop_after_an_earlier_stage_on_resume_trains_nothing(tmp_path):
    """A gate command run again after its stage is past only re-exports (the script is idempotent)."""
    from zooprune.testbed.train_v2 import TrainerV2, parse_args

    argv = tiny_run_argv(tmp_path, 2)
    TrainerV2(parse_args([*argv, "--stop-after", "align"])).run()
    again = TrainerV2(parse_args([*argv, "--resume", "--stop-after", "clip"]))
    steps = again.state["step"]
    again.run()
    assert again.state["stage"] == "qa" and again.state["step"] == steps


def test_stop_after_rejects_the_last_stage():
    from zooprune.testbed.train_v2 import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--stop-after", "qa"])


def _run_script(work):
    root = Path(__file__).resolve().parents[1]
    if not (root / ".venv" / "bin" / "python").is_file():
        pytest.skip("scripts/train-testbed-v2.sh runs .venv/bin/python (scripts/setup-dev.sh)")
    return subprocess.run(
        ["bash", "scripts/train-testbed-v2.sh", str(work)], cwd=root, capture_output=True, text=True, timeout=120
    )


def test_fresh_run_script_stops_at_a_failed_tower_gate(tmp_path):
    """Probe outputs present: the script skips their steps (no training) and applies the gate."""
    work = tmp_path / "run"
    work.mkdir()
    probes = {"probes": {str(work / "model-clip"): {"column": {"acc": 0.2, "majority": 0.07}}}}
    (work / "feature_probes.json").write_text(json.dumps(probes))
    res = _run_script(work)
    assert res.returncode == 1, res.stderr
    assert "gate tower column: 0.2 (needs >= 0.50)" in res.stdout
    assert "gate tower column failed" in res.stderr
    assert not (work / "ckpt.pt").exists()


def test_fresh_run_script_records_the_token_probe_and_goes_on_to_qa(tmp_path):
    """Both probe outputs present and the tower gate passed: the script reports the token probe and
    goes on to qa, which needs the aligned checkpoint (none here: a clear error, no training)."""
    work = tmp_path / "run"
    work.mkdir()
    probes = {"probes": {str(work / "model-clip"): {"column": {"acc": 0.6, "majority": 0.07}}}}
    (work / "feature_probes.json").write_text(json.dumps(probes))
    (work / "validate-align.json").write_text(json.dumps({"position_probe_tokens": {"col": {"acc_all": 0.1}}}))
    res = _run_script(work)
    assert "gate tower column: 0.6 (needs >= 0.50)" in res.stdout
    assert "column probe on the projected tokens after align (recorded): 0.1" in res.stdout
    assert res.returncode == 1 and "no checkpoint in" in res.stderr
    assert not (work / "model").exists()
