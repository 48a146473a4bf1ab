"""`zooprune eval`: resume after a kill, clear errors, tables and plots."""

from __future__ import annotations

import json

import pytest

import zooprune
from zooprune.cli import main
from zooprune.eval.cache import PredictionCache
from zooprune.eval.data import generated_items, jsonl_items
from zooprune.eval.metrics import accuracy_by_family, normalize_answer
from zooprune.eval.runner import configurations, evaluate

SETTINGS = {"model": "tiny", "testbed_seed": 7, "num_samples": 10}


def run(vlm, items, cache, calls=None):
    if calls is not None:  # count the prompts each configuration (a vlm.using copy) generates
        original_using = vlm.using

        def using(**changes):
            trial = original_using(**changes)
            original = trial.generate

            def counting(images, prompts, **kw):
                calls.append(len(prompts))
                return original(images, prompts, **kw)

            trial.generate = counting
            return trial

        vlm.using = using
    return evaluate(vlm, items, ["none", "zoo", "random"], [0.5, 4], cache, batch_size=3, progress=False)


def test_resume_after_a_kill_gives_identical_results(tiny_llava_dir, tmp_path):
    items = generated_items(7, 10)
    vlm = zooprune.load(tiny_llava_dir)
    path = tmp_path / "preds.jsonl"
    full = run(vlm, items, PredictionCache(path, SETTINGS))
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 1 + 10 * 5  # header + 10 items x (none + zoo x2 + random x2)
    # Simulate a kill: only the first 23 predictions were written, the 24th cut mid-line.
    path.write_text("".join(lines[:24]) + lines[24][:15])
    calls: list[int] = []
    resumed = run(zooprune.load(tiny_llava_dir), items, PredictionCache(path, SETTINGS), calls)
    assert resumed == full
    assert sum(calls) == 50 - 23  # finished predictions were not recomputed
    assert len(path.read_text().splitlines()) == 1 + 50


def test_evaluate_leaves_the_model_as_it_was_and_routes_estimator_options(tiny_llava_dir, tmp_path):
    vlm = zooprune.load(tiny_llava_dir, method="divprune", keep=3)
    before = vlm.config
    calls: list[dict] = []
    original = vlm.using

    def spy(**changes):
        calls.append(changes)
        return original(**changes)

    vlm.using = spy
    options = {"estimator": "central", "num_directions": 4}
    cache = PredictionCache(tmp_path / "p.jsonl", SETTINGS)
    evaluate(vlm, generated_items(7, 2), ["none", "zoo", "random"], [4], cache, progress=False, estimator_options=options)
    assert vlm.config == before
    by_method = {c["method"]: c for c in calls}
    assert by_method["zoo"]["estimator"] == "central" and by_method["zoo"]["num_directions"] == 4
    assert "estimator" not in by_method["random"] and "estimator" not in by_method["none"]


def test_cache_refuses_other_settings(tmp_path):
    PredictionCache(tmp_path / "p.jsonl", SETTINGS)
    with pytest.raises(ValueError, match="other settings"):
        PredictionCache(tmp_path / "p.jsonl", {**SETTINGS, "num_samples": 11})


def test_unpruned_is_evaluated_once_and_relative_is_reported(tiny_llava_dir):
    assert configurations(["none", "zoo"], [0.5, 0.25]) == [("none", 1.0), ("zoo", 0.5), ("zoo", 0.25)]


def test_metrics():
    assert (
        normalize_answer(" Yes.") == "yes"
        and normalize_answer("B) red") == "b"
        and normalize_answer("") == ""
    )
    acc = accuracy_by_family([("a", True), ("a", False), ("b", True)])
    assert acc == {"a": 0.5, "b": 1.0, "overall": pytest.approx(2 / 3)}


def test_testbed_items_refuse_training_seeds():
    from zooprune.testbed import TRAIN_SEED_BASE

    with pytest.raises(ValueError, match="training seed"):
        generated_items(TRAIN_SEED_BASE + 1, 2)


def test_user_jsonl_dataset(tmp_path, images):
    images[0].save(tmp_path / "a.png")
    rows = [
        {"image": "a.png", "question": "what ?", "answer": "red", "family": "colour"},
        {"image": "missing.png", "question": "q", "answer": "a"},
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (item,) = jsonl_items(tmp_path / "d.jsonl", num_samples=1)
    assert item.answer == "red" and item.family == "colour"
    with pytest.raises(FileNotFoundError, match="missing.png"):
        jsonl_items(tmp_path / "d.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png"}\n')
    with pytest.raises(ValueError, match="expected JSON with image, question, answer"):
        jsonl_items(tmp_path / "bad.jsonl")


def test_cli_eval_end_to_end(tiny_llava_dir, tmp_path, capsys):
    out = tmp_path / "r" / "results.json"
    args = [
        "eval",
        "--model",
        str(tiny_llava_dir),
        "--methods",
        "none,zoo",
        "--keep",
        "0.5,0.25",
        "--num-samples",
        "6",
    ]
    assert main(args + ["--output", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert [(r["method"], r["keep"]) for r in data["results"]] == [
        ("none", "all"),
        ("zoo", "0.5"),
        ("zoo", "0.25"),
    ]
    assert data["results"][2]["mean_kept_tokens"] == 4.0 and data["results"][0]["num_samples"] == 6
    for r in data["results"]:
        assert set(r["per_family"]) <= {"existence", "attribute", "counting", "spatial", "reading", "choice"}
    assert "overall" in printed and "rel.%" in printed and "plot:" in printed
    from PIL import Image

    with Image.open(data["plots"][0]) as plot:
        assert plot.size[0] > 500 and plot.size[1] > 300


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--methods", "none,zooo"], "Unknown pruning method 'zooo'"),
        (["--model", "/no/such/dir"], "model directory not found"),
        (["--keep", "0.5,abc"], "bad budget 'abc'"),
        (["--keep", "2.5"], "keep ratio must be in"),
        (["--methods", "none,divprune", "--estimator", "central"], "only methods that take a sensitivity estimator"),
        (["--methods", "none,zoo", "--num-directions", "8"], "'num_directions' of method 'zoo' is ignored"),
    ],
)
def test_cli_eval_errors(tiny_llava_dir, tmp_path, capsys, extra, message):
    args = {"--model": str(tiny_llava_dir), "--num-samples": "2", "--output": str(tmp_path / "x.json")}
    args.update(dict(zip(extra[::2], extra[1::2])))
    assert main(["eval", *[x for kv in args.items() for x in kv]]) == 2
    assert message in capsys.readouterr().err
