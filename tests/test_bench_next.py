"""``zooprune bench --synthetic-shape llava-next-7b``: token counts as transformers packs them, the
FLOPs formula by hand, and in-LLM methods measured like the others (issue 15, items 1, 5, 6)."""

from __future__ import annotations

import json

import torch

from zooprune.bench.flops import prefill_flops
from zooprune.bench.report import staged_flops
from zooprune.bench.runner import bench_image, bench_prompt
from zooprune.bench.synthetic import (
    V16_PINPOINTS,
    anyres_counts,
    parse_shape,
    synthetic_config,
    synthetic_llava,
    synthetic_processor,
)
from zooprune.cli import main


def placeholders(processor, config, side: int) -> tuple[int, torch.Tensor]:
    out = processor(
        images=[bench_image(side)], text=["USER: <image>\nwhat ? ASSISTANT:"], return_tensors="pt"
    )
    return int((out["input_ids"] == config.image_token_id).sum()), out["pixel_values"]


def test_llava_next_7b_geometry_without_building_the_model():
    name, shape = parse_shape("llava-next-7b,layers=2")
    assert shape.layers == 2 and shape.full_layers == 32 and shape.image_side == 672
    assert (shape.hidden, shape.intermediate, shape.heads, shape.vocab) == (4096, 11008, 32, 32000)
    assert (shape.image_size, shape.patch_size, shape.vision_hidden, shape.vision_layers) == (
        336,
        14,
        1024,
        24,
    )
    assert shape.pinpoints == V16_PINPOINTS
    config = synthetic_config(shape)  # a config only: no 7B weights
    assert config.model_type == "llava_next" and config.text_config.max_position_embeddings >= 4096
    count, pixels = placeholders(synthetic_processor(shape), config, 672)
    assert tuple(pixels.shape) == (1, 5, 3, 336, 336)  # 2 x 2 crops of 336 px + the base image
    packed, newlines = anyres_counts(config, 672, 672)  # transformers' own pack_image_features
    assert count == packed == 2928
    assert newlines == 48 and packed - newlines == 2880 == 5 * 576  # no unpadding for a square image


def test_tiny_next_token_count_equals_transformers_packing():
    _, shape = parse_shape("llava-next-tiny")
    model, processor = synthetic_llava(shape)
    for side in (112, 100, (150, 80)):  # square (no unpadding), and unpadded ones
        width, height = (side, side) if isinstance(side, int) else side
        image = bench_image(max(width, height)).resize((width, height))
        text = "USER: <image>\nwhat ? ASSISTANT:"
        inputs = processor(images=[image], text=[text], return_tensors="pt")
        count = int((inputs["input_ids"] == model.config.image_token_id).sum())
        with torch.no_grad():
            feats = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"])
        stock = feats.pooler_output if hasattr(feats, "pooler_output") else feats
        packed = (
            sum(int(f.shape[0]) for f in stock) if isinstance(stock, (list, tuple)) else int(stock.shape[0])
        )
        assert count == packed == anyres_counts(model.config, height, width)[0], (side, count, packed)
    assert anyres_counts(model.config, 112, 112) == (88, 8)  # 5 crops x 16 + 8 newlines


def test_prefill_flops_by_hand_next_7b():
    # LLaVA-NeXT-7B at 160 of 2,880 with a 50-token prompt: 50 + 160 + 48 newlines = 258 tokens.
    lm = parse_shape("llava-next-7b")[1].lm()
    d, m, n = 4096, 11008, 258
    # 4 n d^2 = 17,314,086,912; 2 n^2 d = 545,292,288; 2 n d m = 23,265,804,288
    assert prefill_flops(n, lm, layers=1) == 17_314_086_912 + 545_292_288 + 23_265_804_288 == 41_125_183_488
    assert prefill_flops(n, lm) == 32 * 41_125_183_488
    assert prefill_flops(2978, lm, layers=1) == 4 * 2978 * d * d + 2 * 2978**2 * d + 2 * 2978 * d * m
    # FastV at K = 2: two layers at 2,978 tokens, 30 at 258
    assert staged_flops(prefill_flops, 2978, 258, 2, 32, lm) == 2 * 541_049_520_128 + 30 * 41_125_183_488
    bound = prefill_flops(2978, lm) / prefill_flops(258, lm)
    assert 12.5 < bound < 13.5  # tokens 11.5x fewer; the n^2 term makes the bound larger


def test_bench_next_tiny_end_to_end_with_fastv_and_growth(tmp_path, capsys):
    out = tmp_path / "next.json"
    code = main(
        [
            "bench", "--synthetic-shape", "llava-next-tiny", "--methods", "zoo,divprune,fastv",
            "--keep", "20", "--estimator", "closed-form", "--repeats", "1", "--warmup", "0",
            "--new-tokens", "2", "--prompt-words", "4", "--threads", "1",
            "--growth-n", "24,48", "--output", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    meta, rows = report["meta"], report["rows"]
    assert (meta["visual_tokens"], meta["newline_tokens"], meta["budgeted_tokens"], meta["image_px"]) == (
        88,
        8,
        80,
        112,
    )
    by = {r["label"]: r for r in rows}
    assert set(by) == {"none", "zoo/closed-form@20", "divprune@20", "fastv@20"}
    assert by["zoo/closed-form@20"]["kept_tokens"] == 20 + 8  # newlines kept on top of the budget
    text = by["none"]["seq_len"] - 88
    assert by["divprune@20"]["seq_len"] == text + 28
    fastv = by["fastv@20"]
    # item 5: the whole prefill is timed (layers before and after K) and has a bound
    assert fastv["ms"]["lm_prefill"] > 0 and fastv["speedup"]["lm_prefill"] > 0
    assert (
        fastv["prune_layer"] == 2
        and len(fastv["lm_layers_ms"]) == 3
        and all(v > 0 for v in fastv["lm_layers_ms"])
    )
    assert fastv["equivalent_tokens"] == round((2 * 88 + 20) / 3, 2)
    lm = parse_shape("llava-next-tiny")[1].lm()
    full_seq = text + 88
    assert fastv["prefill_flops"] == prefill_flops(full_seq, lm, layers=2) + prefill_flops(
        text + 20, lm, layers=1
    )
    assert 1.0 < fastv["flops_bound_speedup"] < by["divprune@20"]["flops_bound_speedup"]
    assert fastv["lm_prefill_speedup_of_bound"] is not None and fastv["lm_prefill_speedup_of_bound"] > 0
    assert fastv["flops_bound_speedup_equivalent"] > 1.0
    assert fastv["flops_bound_speedup_full"] == fastv["flops_bound_speedup"]  # built at full depth (3)
    for row in rows:
        assert row["ms"]["lm_prefill"] > 0 and row["ttft_full_ms"] > 0
    # item 6: scoring / selection against N
    growth = report["growth"]
    assert [(r["label"], r["n"], r["k"]) for r in growth["rows"]] == [
        ("zoo/closed-form", 24, 2), ("zoo/closed-form", 48, 5), ("divprune", 24, 2), ("divprune", 48, 5),
    ]  # fmt: skip
    assert all(r["ms"]["total"] > 0 for r in growth["rows"])
    assert growth["rows"][0]["ms"]["score"] > 0 and growth["rows"][2]["ms"]["score"] == 0
    assert "fastv@20" in growth["skipped"] and set(growth["exponents"]) == {"zoo/closed-form", "divprune"}
    printed = capsys.readouterr().out
    assert "cost growth" in printed and "fastv@20" in printed


def test_bench_prompt_words_are_one_token_each():
    _, shape = parse_shape("llava-next-tiny")
    processor = synthetic_processor(shape)
    assert len(processor.tokenizer(bench_prompt(7))["input_ids"]) == 7
