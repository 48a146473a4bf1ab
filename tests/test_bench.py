"""``zooprune bench``: analytic costs, synthetic shapes, memory sampler, and one tiny end-to-end run."""

from __future__ import annotations

import json

import pytest
import torch

from zooprune.bench.flops import LMShape, estimator_flops, kv_cache_bytes, llama_prefill_macs, prefill_flops
from zooprune.bench.memory import PeakRSS
from zooprune.bench.runner import make_cases
from zooprune.bench.synthetic import PRESETS, parse_shape, synthetic_llava
from zooprune.cli import main

LLAMA7B = LMShape(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000)


def test_prefill_flops_formula_and_bound():
    n, d, m = 640, 4096, 11008
    assert prefill_flops(n, LLAMA7B, layers=1) == 4 * n * d * d + 2 * n * n * d + 2 * n * d * m
    assert prefill_flops(n, LLAMA7B) == 32 * prefill_flops(n, LLAMA7B, layers=1)
    bound = prefill_flops(576 + 64, LLAMA7B) / prefill_flops(64 + 64, LLAMA7B)
    assert 4.5 < bound < 5.2  # linear terms dominate: about the token ratio 640/128
    assert llama_prefill_macs(n, LLAMA7B, layers=1) == 4 * n * d * d + 2 * n * n * d + 3 * n * d * m


def test_kv_cache_bytes_llava_7b():
    # 2 (K, V) x 32 layers x 4096 x 2 bytes = 512 KiB per token in fp16
    assert kv_cache_bytes(1, LLAMA7B, 2) == 512 * 1024
    gqa = LMShape(64, 128, 2, 4, 2, 100)
    assert kv_cache_bytes(10, gqa, 4) == 2 * 2 * 2 * 16 * 10 * 4


def test_estimator_flops_ordering():
    args = (576, 1024, 4096, 4096)
    central, jvp, closed = (estimator_flops(e, *args) for e in ("central", "jvp", "closed-form"))
    one_pass = 576 * (1024 * 4096 + 4096 * 4096)
    assert central == 128 * one_pass and jvp == 65 * one_pass and closed == one_pass
    with pytest.raises(ValueError):
        estimator_flops("adjoint", *args)


def test_parse_shape_presets_and_overrides():
    name, shape = parse_shape("llava-1.5-7b,layers=2")
    assert name == "llava-1.5-7b" and shape.layers == 2 and shape.full_layers == 32
    assert shape.hidden == 4096 and shape.intermediate == 11008 and shape.vision_hidden == 1024
    assert shape.num_visual_tokens == 576 and shape.vision_layers == 24
    assert parse_shape("tiny,hidden=32")[1].hidden == 32
    with pytest.raises(ValueError, match="unknown synthetic shape"):
        parse_shape("llava-9")
    with pytest.raises(ValueError, match="bad shape override"):
        parse_shape("tiny,depth=3")
    with pytest.raises(ValueError, match="not an integer"):
        parse_shape("tiny,layers=two")


def test_synthetic_model_has_the_shape():
    model, processor = synthetic_llava(PRESETS["tiny"])
    text = model.config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_key_value_heads) == (64, 2, 2)
    assert model.model.multi_modal_projector.linear_1.in_features == 32
    assert processor.image_processor.crop_size["height"] == 32


def test_cases_put_baseline_first_and_cross_estimators():
    cases = make_cases(["zoo", "divprune", "none"], [64, 0.25], ["central", "closed-form"])
    assert cases[0].method == "none"
    labels = [c.label for c in cases]
    assert labels[1:] == [
        "zoo/central@64",
        "zoo/closed-form@64",
        "zoo/central@0.25",
        "zoo/closed-form@0.25",
        "divprune@64",
        "divprune@0.25",
    ]


def test_peak_rss_sees_an_allocation():
    with PeakRSS() as mem:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        block.add_(1.0)
    del block
    assert mem.peak_delta >= 32 * 2**20


def test_bench_cli_end_to_end_tiny(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--synthetic-shape",
            "tiny,layers=1",
            "--methods",
            "zoo,divprune",
            "--keep",
            "4",
            "--estimator",
            "central,closed-form",
            "--num-directions",
            "8",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--new-tokens",
            "3",
            "--prompt-words",
            "6",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert out.with_suffix(".png").is_file()
    meta, rows = report["meta"], report["rows"]
    assert meta["shape"]["layers"] == 1 and meta["visual_tokens"] == 16 and meta["threads"] >= 1
    assert [r["label"] for r in rows] == ["none", "zoo/central(m=8)@4", "zoo/closed-form@4", "divprune@4"]
    for row in rows:
        assert set(row["ms"]) >= {
            "encode",
            "score",
            "select",
            "prefill",
            "lm_prefill",
            "decode",
            "decode_per_token",
            "ttft",
            "e2e",
        }
        assert row["prefill_flops"] > 0 and row["kv_cache_bytes"] > 0 and row["peak_rss_delta_mb"] is not None
        assert set(row["speedup"]) >= {"prefill", "lm_prefill", "ttft", "e2e", "decode_per_token"}
        assert "flops_bound_speedup" in row and "lm_prefill_speedup_of_bound" in row
        assert row["ms"]["lm_prefill"] > 0 and row["prefill_full_ms"] >= row["ms"]["prefill"]
    none, zoo = rows[0], rows[1]
    assert none["seq_len"] - zoo["seq_len"] == 12 and zoo["kept_tokens"] == 4
    assert none["flops_bound_speedup"] == 1.0 and zoo["flops_bound_speedup"] > 1.0
    assert zoo["ms"]["score"] > 0 and none["ms"]["score"] == 0
    assert "zoo/closed-form@4" in capsys.readouterr().out


def test_bench_cli_needs_one_source(capsys):
    with pytest.raises(SystemExit):
        main(["bench"])
    assert main(["bench", "--synthetic-shape", "nope"]) == 2
    assert "unknown synthetic shape" in capsys.readouterr().err


def test_bench_api_on_a_checkpoint(tiny_llava_dir):
    from zooprune.bench import run_bench

    report = run_bench(
        model=str(tiny_llava_dir),
        methods=["zoo"],
        keeps=[4],
        estimators=["jvp"],
        num_directions=4,
        repeats=1,
        warmup=0,
        new_tokens=2,
        prompt_words=3,
        log=None,
    )
    assert report["meta"]["source"].startswith("checkpoint")
    assert [r["label"] for r in report["rows"]] == ["none", "zoo/jvp(m=4)@4"]
    assert report["rows"][1]["kept_tokens"] == 4
