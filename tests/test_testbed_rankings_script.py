"""``benchmarks/testbed_rankings.py``: ranks, Spearman and the paired verdicts on hand-made results."""

from __future__ import annotations

import json

import pytest

from .conftest import load_benchmark_script


@pytest.fixture(scope="module")
def rankings():
    return load_benchmark_script("testbed_rankings")


def summary(method: str, acc: float, vs_zoo: tuple[float, bool] | None) -> dict:
    cmp = None if vs_zoo is None else {"difference": vs_zoo[0], "distinguishable": vs_zoo[1]}
    return {
        "method": method,
        "keep": "0.111",
        "accuracy": acc,
        "ci95": [acc - 0.05, acc + 0.05],
        "references": ["zoo"],
        "vs_references": {"zoo": cmp},
    }


def test_ranks_spearman_and_verdicts(rankings, tmp_path):
    a = [
        summary("zoo", 0.6, None),
        summary("divprune", 0.7, (0.1, True)),
        summary("random", 0.5, (-0.1, True)),
    ]
    # b: divprune and random swap order; random's deficit is no longer distinguishable
    b = [
        summary("zoo", 0.6, None),
        summary("divprune", 0.5, (-0.1, True)),
        summary("random", 0.55, (-0.05, False)),
    ]
    for name, rows in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"results": rows}))
    text = rankings.compare(
        rankings.load(str(tmp_path / "a.json")), rankings.load(str(tmp_path / "b.json")), ("v1", "v2")
    )
    # accuracies a = (0.6, 0.7, 0.5), b = (0.6, 0.5, 0.55): ranks (2, 1, 3) vs (1, 3, 2) -> rho = -0.5
    assert "= -0.50 (3 methods)" in text
    assert "| divprune | 0.111 | zoo | + | - | opposite |" in text
    assert "| random | 0.111 | zoo | - | n.d. | one |" in text
    assert "Holds on both: 0; on one model only: 1; opposite: 1" in text
    assert rankings.rank([0.7, 0.5, 0.7], 0.7) == 1 and rankings.rank([0.7, 0.5, 0.7], 0.5) == 3
