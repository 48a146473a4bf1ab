"""``zooprune bench --batch``: ragged per-image budgets, merged batches, and the throughput accounting."""

from __future__ import annotations

import json

import pytest
import torch

from zooprune.bench.batch import (
    batch_cases,
    merge_prepared,
    prepare_chunk,
    ragged_budgets,
    round_summary,
    run_batch_bench,
)
from zooprune.bench.runner import bench_image
from zooprune.bench.synthetic import parse_shape, synthetic_llava
from zooprune.cli import main
from zooprune.config import PruneConfig
from zooprune.vlm import PrunedVLM, generate_pruned


@pytest.fixture(scope="module")
def vlm():
    model, processor = synthetic_llava(parse_shape("tiny,layers=3")[1])
    return PrunedVLM(model, processor, PruneConfig("none", keep=1.0))


def test_ragged_budgets_cycle():
    assert ragged_budgets([8, 4, 2], 7) == [8, 4, 2, 8, 4, 2, 8]
    assert ragged_budgets([0.5], 3) == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError):
        ragged_budgets([], 2)


def test_ragged_chunk_equals_one_by_one(vlm):
    images = [bench_image(32, seed) for seed in range(4)]
    prompts = ["what is in the image ?", "how many ?", "describe this picture", "what ?"]
    budgets = [8, 3, 8, 5]
    zoo = vlm.using(method="zoo", keep=8)
    prepared, order = prepare_chunk(zoo, images, prompts, budgets)
    assert order == [0, 2, 1, 3]  # one prepare per distinct budget, in order of first appearance
    assert [r.tokens_after for r in prepared.reports] == [8, 8, 3, 5]
    lengths = prepared.spliced.attention_mask.sum(dim=1).tolist()
    assert prepared.spliced.attention_mask.shape[1] == max(lengths) and len(set(lengths)) > 1
    together = generate_pruned(vlm.model, prepared, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    for row, i in enumerate(order):
        single = zoo.using(keep=budgets[i]).prepare(images[i : i + 1], prompts[i : i + 1])
        alone = generate_pruned(vlm.model, single, max_new_tokens=4, min_new_tokens=4, do_sample=False)[0]
        assert torch.equal(single.reports[0].kept_indices, prepared.reports[row].kept_indices)
        assert torch.equal(together[row], alone)


def test_merge_rejects_in_llm_plans(vlm):
    image = bench_image(32, 0)
    parts = [vlm.using(method="fastv", keep=4).prepare([image], ["what ?"]) for _ in range(2)]
    with pytest.raises(ValueError, match="in-LLM"):
        merge_prepared(parts)


def test_round_summary_accounting():
    chunks = [
        {"images": 4, "ms": {"e2e": 300.0, "ttft": 200.0}},
        {"images": 2, "ms": {"e2e": 100.0, "ttft": 50.0}},
    ]
    s = round_summary(chunks)
    assert s["total_ms"] == 400.0 and s["images_per_s"] == 15.0  # 6 images in 0.4 s
    assert s["mean_ttft_ms"] == 150.0  # (4 x 200 + 2 x 50) / 6


def test_batch_bench_accounting(vlm):
    images = [bench_image(32, seed) for seed in range(4)]
    cases = batch_cases(["zoo", "fastv"], ["closed-form"], None)
    assert [c.label.split("@")[0] for c in cases] == ["none", "zoo/closed-form", "fastv"]
    entries = run_batch_bench(vlm, cases, images, "what is in the image", [6, 2], [1, 2, 4], 3, 2, 0)
    none, zoo, fastv = entries
    assert zoo["budgets"] == [6, 2, 6, 2] and not zoo["uniform_budget"]
    assert fastv["budgets"] == [6, 6, 6, 6] and fastv["uniform_budget"]  # in-LLM: one budget per batch
    assert none["budgets"] == [1.0] * 4
    for entry in entries:
        assert set(entry["batch"]) == {"1", "2", "4"}
        for b, per in entry["batch"].items():
            assert len(per["rounds"]) == 2
            for rnd in per["rounds"]:
                chunks = rnd["chunks"]
                assert [c["images"] for c in chunks] == [int(b)] * (4 // int(b))
                assert sum((c["budgets"] for c in chunks), []) == entry["budgets"]
                kept = sum((c["kept_tokens"] for c in chunks), [])
                if entry is zoo:
                    assert kept == [6, 2, 6, 2]
                if entry is none:
                    assert kept == [16] * 4
                assert all(c["visual_tokens"] == [16] * c["images"] for c in chunks)
                for c in chunks:
                    assert c["padded_len"] == max(c["seq_lens"])
                    assert c["ms"]["ttft"] == pytest.approx(c["ms"]["e2e"] - c["ms"]["decode"])
                total = sum(c["ms"]["e2e"] for c in chunks)
                assert rnd["images_per_s"] == pytest.approx(4e3 / total, rel=1e-3)
            medians = sorted(r["images_per_s"] for r in per["rounds"])
            assert per["images_per_s"] == pytest.approx(sum(medians) / 2)
        base = entry["batch"]["1"]
        assert base["images_per_s_vs_smallest"] == 1.0
        four = entry["batch"]["4"]
        assert four["images_per_s_vs_smallest"] == pytest.approx(
            four["images_per_s"] / base["images_per_s"], abs=1e-3
        )


def test_batch_cli_writes_json_and_plot(tmp_path):
    out = tmp_path / "batch.json"
    code = main(
        [
            "bench", "--synthetic-shape", "tiny,layers=1", "--methods", "divprune", "--keep", "8,4",
            "--batch", "1,2", "--repeats", "1", "--warmup", "0", "--new-tokens", "2",
            "--prompt-words", "3", "--threads", "1", "--output", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["rows"] == [] and report["meta"]["batch_sizes"] == [1, 2]
    assert [e["label"] for e in report["batch"]] == ["none", "divprune"]
    assert report["batch"][1]["budgets"] == [8, 4]
    assert out.with_suffix(".png").is_file()
