"""The pure parts of ``benchmarks/vllm_serving.py`` (the timed run itself is a benchmark, not a test)."""

from __future__ import annotations

import pytest

from .conftest import load_benchmark_script


@pytest.fixture(scope="module")
def serving():
    return load_benchmark_script("vllm_serving")


def test_parse_configs(serving):
    assert serving.parse_configs("none, zoo:64,divprune") == [
        None,
        {"method": "zoo", "keep": 64},
        {"method": "divprune"},
    ]
    with pytest.raises(ValueError):
        serving.parse_configs("zoo:sixty")


def test_prompt_text_has_the_requested_words(serving):
    assert serving.prompt_text(3) == "Describe the image."
    text = serving.prompt_text(45)
    assert len(text.split()) == 45 and text.startswith("Describe the image. Mention every")


def test_ratios_are_against_unpruned_at_the_same_concurrency(serving):
    def row(method, c, rps, ttft, **keep):
        return {"config": {"method": method, **keep}, "concurrency": c, "requests_per_s": rps,
                "ttft_p50_s": ttft, "ttft_p95_s": ttft, "prompt_tokens": 626}  # fmt: skip

    rows = [row("none", 1, 0.25, 4.0), row("none", 8, 0.5, 8.0), row("zoo", 1, 1.0, 1.0, keep=64),
            row("zoo", 8, 1.0, 2.0, keep=64)]  # fmt: skip
    serving.add_ratios(rows)
    assert [r["requests_per_s_x"] for r in rows] == [1.0, 1.0, 4.0, 2.0]
    assert [r["ttft_p50_x"] for r in rows] == [1.0, 1.0, 4.0, 4.0]
    table = serving.table(rows)
    assert "| zoo:64 | 8 | 1.000 | 2.00 | 2.000 | 4.00 |" in table


def test_ratio_is_missing_without_an_unpruned_row(serving):
    rows = [{"config": {"method": "zoo", "keep": 64}, "concurrency": 1, "requests_per_s": 1.0, "ttft_p50_s": 1.0}]
    serving.add_ratios(rows)
    assert rows[0]["requests_per_s_x"] is None and rows[0]["ttft_p50_x"] is None
